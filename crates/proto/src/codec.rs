//! The codec every generated Meridian service and client uses: prost's,
//! with a decode failure answered as the client's error.
//!
//! tonic-prost answers bytes that do not decode (a string field that is
//! not UTF-8, a truncated varint) with `INTERNAL`, which tells a client the
//! server broke. They are the client's bad input: `INVALID_ARGUMENT`, with
//! prost's description, which names the message and field
//! (`CreateTicketRequest.subject: invalid string value: data is not UTF-8
//! encoded`).

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// prost's codec with input errors mapped to `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

/// prost's decoder; a message that does not decode is `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct ProtoDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|error| Status::invalid_argument(error.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use crate::v1;
    use prost::Message;

    #[test]
    fn invalid_utf8_names_the_field() {
        // Field 1 (subject), length 2, bytes that are no UTF-8.
        let bytes = [0x0a, 0x02, 0xff, 0xfe];
        let error = v1::CreateTicketRequest::decode(&bytes[..])
            .unwrap_err()
            .to_string();
        assert!(error.contains("CreateTicketRequest.subject"), "{error}");
    }
}

/// Turns tonic's answer to a request over the size limit (`OUT_OF_RANGE`,
/// naming no field) into `INVALID_ARGUMENT` naming the request message,
/// its limit and the setting that holds it. Meridian's handlers never
/// answer `OUT_OF_RANGE` themselves, so the code alone says it was the
/// transport's size check. Fields have limits of their own below this one,
/// which name the field.
#[derive(Debug, Clone, Copy)]
pub struct OversizeLayer {
    limit_bytes: usize,
    setting: &'static str,
}

impl OversizeLayer {
    pub fn new(limit_bytes: usize, setting: &'static str) -> Self {
        Self {
            limit_bytes,
            setting,
        }
    }
}

impl<S> tower_layer::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Oversize<S> {
        Oversize {
            inner,
            layer: *self,
        }
    }
}

/// The service of [`OversizeLayer`].
#[derive(Debug, Clone)]
pub struct Oversize<S> {
    inner: S,
    layer: OversizeLayer,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, Req, Res> tower_service::Service<http::Request<Req>> for Oversize<S>
where
    S: tower_service::Service<http::Request<Req>, Response = http::Response<Res>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Res>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Res>, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Req>) -> Self::Future {
        let layer = self.layer;
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            let headers = response.headers_mut();
            let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
            if headers
                .get("grpc-status")
                .is_some_and(|status| status.as_bytes() == out_of_range.as_bytes())
            {
                let message = format!(
                    "request: the message is larger than the limit of {} bytes ({}); send less",
                    layer.limit_bytes, layer.setting
                );
                let code = (tonic::Code::InvalidArgument as i32).to_string();
                if let (Ok(code), Ok(message)) = (
                    http::HeaderValue::from_str(&code),
                    http::HeaderValue::from_str(&message),
                ) {
                    headers.insert("grpc-status", code);
                    headers.insert("grpc-message", message);
                }
            }
            Ok(response)
        })
    }
}
