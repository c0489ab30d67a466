//! Bounded inputs: whatever a caller sends, it gets a clear refusal and
//! costs Tollgate a bounded amount of memory.

use tonic::Code;

use crate::helpers::{spawn_app, TestApp};

/// A HasAccessRequest whose `user_id` (field 1) carries raw bytes, so a
/// test can send what a conforming client never would.
#[derive(Clone, PartialEq, prost::Message)]
struct RawHasAccess {
    #[prost(bytes = "vec", tag = "1")]
    user_id: Vec<u8>,
}

async fn raw_has_access(app: &TestApp, user_id: Vec<u8>) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec =
        tonic_prost::ProstCodec::<RawHasAccess, tollgate::proto::HasAccessResponse>::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/tollgate.v1.Entitlements/HasAccess");
    grpc.unary(tonic::Request::new(RawHasAccess { user_id }), path, codec)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn oversized_ids_and_products_are_invalid_arguments() {
    let app = spawn_app().await;
    let huge = "u".repeat(60_000);
    let table = [
        (
            huge.as_str(),
            "",
            "",
            Code::InvalidArgument,
            "user_id is longer than 255 bytes",
        ),
        (
            "",
            &huge[..256],
            "",
            Code::InvalidArgument,
            "customer_id is longer than 255 bytes",
        ),
        (
            "u1",
            "",
            &huge[..256],
            Code::InvalidArgument,
            "product is longer than 255 bytes",
        ),
        (
            "u\0x",
            "",
            "",
            Code::InvalidArgument,
            "user_id contains control characters",
        ),
    ];
    for (user, customer, product, code, message) in table {
        let err = app.has_access(user, customer, product).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (code, message));
    }
    // 255 bytes is still an id.
    let answer = app.has_access(&huge[..255], "", "").await.unwrap();
    assert!(!answer.has_access);
}

#[tokio::test]
async fn a_message_over_64_kib_is_refused_before_it_is_decoded() {
    let app = spawn_app().await;
    let err = raw_has_access(&app, vec![b'u'; 65 * 1024])
        .await
        .unwrap_err();
    // tonic's code for a message over the limit.
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());
}

#[tokio::test]
async fn invalid_utf8_in_a_string_field_is_an_invalid_argument() {
    let app = spawn_app().await;
    let err = raw_has_access(&app, vec![b'u', 0xff, 0xfe])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("not a valid message"),
        "{}",
        err.message()
    );
    // A valid request on a fresh call still works.
    assert!(raw_has_access(&app, b"user_ok".to_vec()).await.is_ok());
}
