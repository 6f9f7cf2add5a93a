use g2::Node;

async fn start() {
    let net = g2::mem::MemNetwork::new();
    let _node = Node::builder()
        .network("plas.qut.edu")
        .transport(net.endpoint())
        .build()
        .await;
}

fn main() {
    let _ = start();
}
