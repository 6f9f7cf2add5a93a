#[g2::remote]
pub trait Island {
    #[oneway]
    async fn evolve(&mut self, generations: u32) -> u64;
}

fn main() {}
