//! The gateway's own HTTP/1.1 client (`gateway::upstream_h1`) reading what an
//! upstream answers, cut into reads of a size the input chooses: it must never
//! panic nor hang; an answer it accepts with one `Content-Length` and no
//! transfer coding has a body of exactly that length; a body is never longer
//! than what the upstream sent; a connection it would reuse read its answer
//! to the end with nothing left over in its buffer; and an answer whose final
//! head is all there (by httparse on the whole input) is never taken for one
//! cut short, however the reads cut it (the head gate must not miss its end).
#![no_main]

use std::cell::RefCell;

use http::{HeaderMap, Method};
use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use portcullis::gateway::upstream_h1::{Conn, ExchangeError, Stream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    // First byte: the read size (low 6 bits, at least 1) and the method.
    let Some((&control, answer)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(control & 0x3f).max(1);
    let method = if control & 0x40 != 0 {
        Method::HEAD
    } else {
        Method::GET
    };
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        let rt = slot.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime")
        });
        rt.block_on(exchange(answer.to_vec(), read_size, method));
    });
});

async fn exchange(answer: Vec<u8>, read_size: usize, method: Method) {
    // A pipe that holds `read_size` bytes: each read of the client gets at
    // most that many.
    let (client, server) = tokio::io::duplex(read_size);
    let (mut from_client, mut to_client) = tokio::io::split(server);
    let sent = answer.len();
    let answer_copy = answer.clone();
    let upstream = tokio::spawn(async move {
        let _ = to_client.write_all(&answer).await;
        let _ = to_client.shutdown().await;
    });
    let drain = tokio::spawn(async move {
        let mut sink = [0u8; 256];
        while matches!(from_client.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let whole_head = final_head_complete(&answer_copy);
    let mut headers = HeaderMap::new();
    let result = Conn::new(Stream::Memory(client))
        .exchange(&method, "/", &mut headers, &[])
        .await;
    if let Err(failed) = &result {
        let cut = matches!(failed.error, ExchangeError::Cut | ExchangeError::Closed);
        assert!(
            !(whole_head && cut),
            "a complete final head was taken for a cut answer: {:?}",
            failed.error
        );
    }
    if let Ok(response) = result {
        let bodiless = method == Method::HEAD || matches!(response.status().as_u16(), 204 | 304);
        let declared = declared_length(response.headers());
        let mut body = response.into_body();
        let mut data = Vec::new();
        let mut whole = true;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(d) = frame.data_ref() {
                        data.extend_from_slice(d);
                    }
                }
                Err(_) => {
                    whole = false;
                    break;
                }
            }
        }
        assert!(data.len() <= sent, "a body longer than the answer");
        if bodiless {
            assert!(data.is_empty(), "a body for a bodiless answer");
        } else if let (true, Some(n)) = (whole, declared) {
            assert_eq!(
                data.len() as u64,
                n,
                "a body of another length than declared"
            );
        }
        if body.take_reusable().is_some() {
            assert!(whole, "a connection reused after a failed body");
        }
    }
    upstream.abort();
    drain.abort();
}

/// The one `Content-Length` of an answer without `Transfer-Encoding`.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let first = lengths.next()?;
    first.to_str().ok()?.parse().ok()
}

/// Whether `answer` begins with a final (not informational) answer head
/// that is all there and within the gateway's limits (256 KiB, 100 fields).
fn final_head_complete(answer: &[u8]) -> bool {
    let mut fields = [httparse::EMPTY_HEADER; 100];
    let mut response = httparse::Response::new(&mut fields);
    match response.parse(answer) {
        Ok(httparse::Status::Complete(len)) => {
            len <= 256 * 1024 && response.code.is_some_and(|c| c >= 200)
        }
        _ => false,
    }
}
