pub struct Population {
    pub tours: Vec<Vec<u32>>,
}

#[g2::remote]
pub trait Island {
    async fn receive(&mut self, migrants: Population);
}

fn main() {}
