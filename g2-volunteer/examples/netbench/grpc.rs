//! The gRPC baseline: tonic, one unary method, the payload passed through as the
//! message (no protobuf), so that only the RPC stack is measured.

use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError, http};
use tonic::{Request, Response, Status};

/// The method's path.
pub const ECHO: &str = "/netbench.Echo/Echo";

/// Messages are the raw payload bytes.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut v = vec![0u8; bytes::Buf::remaining(src)];
        bytes::Buf::copy_to_slice(src, &mut v);
        Ok(Some(v))
    }
}

/// The server side, written as tonic's generated code would be.
#[derive(Clone, Copy)]
pub struct EchoServer;

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "netbench.Echo";
}

struct Echo;

impl tonic::server::UnaryService<Vec<u8>> for Echo {
    type Response = Vec<u8>;
    type Future = std::future::Ready<Result<Response<Vec<u8>>, Status>>;
    fn call(&mut self, request: Request<Vec<u8>>) -> Self::Future {
        std::future::ready(Ok(Response::new(request.into_inner())))
    }
}

impl<B> Service<http::Request<B>> for EchoServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() == ECHO {
                Ok(tonic::server::Grpc::new(RawCodec).unary(Echo, req).await)
            } else {
                Ok(Status::unimplemented(req.uri().path().to_string()).into_http())
            }
        })
    }
}

/// A client of the echo method over one channel (clones share its connection).
#[derive(Clone)]
pub struct EchoClient(tonic::client::Grpc<tonic::transport::Channel>);

impl EchoClient {
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Self, String> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("gRPC endpoint: {e}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("gRPC connect: {e}"))?;
        Ok(Self(tonic::client::Grpc::new(channel)))
    }

    pub async fn echo(&mut self, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        self.0
            .ready()
            .await
            .map_err(|e| format!("gRPC not ready: {e}"))?;
        let path = http::uri::PathAndQuery::from_static(ECHO);
        self.0
            .unary(Request::new(payload), path, RawCodec)
            .await
            .map(Response::into_inner)
            .map_err(|e| format!("gRPC call: {e}"))
    }
}
