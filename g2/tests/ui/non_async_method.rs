#[g2::remote]
pub trait Island {
    fn evolve(&mut self, generations: u32) -> u64;
}

fn main() {}
