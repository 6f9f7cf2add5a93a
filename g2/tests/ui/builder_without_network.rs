use g2::Node;

async fn start() {
    let net = g2::mem::MemNetwork::new();
    let members = g2::testing::Directory::new();
    let _node = Node::builder()
        .overlay(members.overlay())
        .transport(net.endpoint())
        .build()
        .await;
}

fn main() {
    let _ = start();
}
