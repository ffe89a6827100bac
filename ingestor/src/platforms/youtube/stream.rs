//! `liveChatMessages.streamList`: the server-streaming gRPC method
//! `youtube.api.v3.V3DataLiveChatMessageService/StreamList` at
//! `YOUTUBE_GRPC_URL` (`https://youtube.googleapis.com`, TLS with the
//! webpki roots; `http://` for a local fake, HTTP/2 without TLS).
//!
//! One HTTP/2 connection carries the streams of every chat. A stream costs
//! 5 quota units when it is opened and then sends pages as messages arrive;
//! after a drop it is opened again from the last `next_page_token`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status, Streaming};

use super::api::{ApiError, Credentials, Reason};
use super::limits::MAX_ERROR_TEXT;
use super::quota::{Call, Quota};
use super::resource::pb;
use super::resource::pb::v3_data_live_chat_message_service_client::V3DataLiveChatMessageServiceClient;
use crate::platforms::seam::Reachability;

/// The streaming client, shared by every chat of the source.
#[derive(Debug, Clone)]
pub struct StreamClient {
    channel: Channel,
    credentials: Credentials,
    quota: Arc<Quota>,
    reach: Arc<Reachability>,
    /// tonic's decode limit: a larger message ends the stream.
    max_message_bytes: usize,
}

impl StreamClient {
    /// A client of `url`; connects when the first stream is opened. A
    /// message over `max_message_bytes` is refused (tonic's decode limit).
    ///
    /// # Errors
    /// When `url` is not a valid URI or TLS cannot be set up.
    pub fn new(
        url: &str,
        connect_timeout: Duration,
        credentials: Credentials,
        quota: Arc<Quota>,
        reach: Arc<Reachability>,
        max_message_bytes: usize,
    ) -> anyhow::Result<Self> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if url.starts_with("https://") {
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_webpki_roots())?;
        }
        Ok(Self {
            channel: endpoint.connect_lazy(),
            credentials,
            quota,
            reach,
            max_message_bytes,
        })
    }

    /// Opens the chat's stream from `page_token` (the recent messages
    /// without one).
    ///
    /// # Errors
    /// [`ApiError::Stream`] with the status's [`Reason`]; the quota gate's
    /// and the credentials' errors.
    pub async fn open(
        &self,
        live_chat_id: &str,
        page_token: Option<&str>,
    ) -> Result<Streaming<pb::LiveChatMessageListResponse>, ApiError> {
        let now = Utc::now();
        if let Some(until) = self.quota.blocked_until(now) {
            return Err(ApiError::QuotaWait(until));
        }
        let header = self.credentials.header().await?;
        let mut request = tonic::Request::new(pb::LiveChatMessageListRequest {
            live_chat_id: Some(live_chat_id.to_owned()),
            page_token: page_token.map(str::to_owned),
            part: vec!["id".into(), "snippet".into(), "authorDetails".into()],
            ..Default::default()
        });
        let value = MetadataValue::try_from(header.value.expose()).map_err(|_| {
            ApiError::Credentials("the credential is not a valid header value".into())
        })?;
        request.metadata_mut().insert(header.name, value);
        self.quota
            .spend(Call::StreamList, now)
            .map_err(ApiError::QuotaWait)?;
        let mut client = V3DataLiveChatMessageServiceClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes);
        match client.stream_list(request).await {
            Ok(response) => {
                self.reach.succeeded();
                Ok(response.into_inner())
            }
            Err(status) => {
                let error = self.error(&status, page_token.is_some());
                if error.reason() == Reason::Unauthorized {
                    self.credentials.rejected(&header).await;
                }
                Err(error)
            }
        }
    }

    /// Classifies a status (from opening or from the stream), updating the
    /// quota gate and reachability.
    pub fn error(&self, status: &Status, had_token: bool) -> ApiError {
        let reason = reason_of(status, had_token);
        if reason == Reason::QuotaExceeded {
            self.quota.exceeded(Utc::now());
        }
        if reason.is_unreachable() {
            self.reach
                .failed(&format!("streamList: {}", status.message()));
        } else {
            self.reach.succeeded();
        }
        ApiError::Stream {
            reason,
            code: format!("{:?}", status.code()),
            message: common::body::cut(status.message(), MAX_ERROR_TEXT),
        }
    }
}

/// The reason of a gRPC status, as YouTube documents them for streamList.
/// `FAILED_PRECONDITION` means the chat ended or is disabled (gRPC cannot
/// tell them apart, says Google): the caller looks at the video to know.
pub fn reason_of(status: &Status, had_token: bool) -> Reason {
    match status.code() {
        Code::Unimplemented => Reason::StreamUnavailable,
        Code::PermissionDenied => Reason::Forbidden,
        Code::Unauthenticated => Reason::Unauthorized,
        Code::FailedPrecondition => Reason::ChatEnded,
        Code::NotFound => Reason::ChatNotFound,
        Code::ResourceExhausted if status.message().to_ascii_lowercase().contains("quota") => {
            Reason::QuotaExceeded
        }
        Code::ResourceExhausted => Reason::RateLimited,
        // tonic's own: a message over the decode limit.
        Code::OutOfRange if status.message().contains("message length too large") => {
            Reason::TooLarge
        }
        Code::InvalidArgument if had_token => Reason::PageTokenInvalid,
        Code::InvalidArgument | Code::OutOfRange | Code::AlreadyExists => Reason::BadRequest,
        Code::DeadlineExceeded => Reason::Timeout,
        Code::Unavailable | Code::Cancelled => Reason::Unreachable,
        Code::Ok | Code::Unknown | Code::Aborted | Code::Internal | Code::DataLoss => {
            Reason::ServerError
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_reasons() {
        for (status, token, want) in [
            (Status::unimplemented(""), false, Reason::StreamUnavailable),
            (
                Status::permission_denied("The caller does not have permission"),
                false,
                Reason::Forbidden,
            ),
            (
                Status::failed_precondition("Precondition check failed"),
                true,
                Reason::ChatEnded,
            ),
            (
                Status::not_found("Requested entity was not found"),
                false,
                Reason::ChatNotFound,
            ),
            (
                Status::resource_exhausted("Resource has been exhausted (e.g. check quota)"),
                false,
                Reason::QuotaExceeded,
            ),
            (
                Status::resource_exhausted("too many requests"),
                false,
                Reason::RateLimited,
            ),
            (
                Status::invalid_argument("Request contains an invalid argument"),
                true,
                Reason::PageTokenInvalid,
            ),
            (
                Status::invalid_argument("Request contains an invalid argument"),
                false,
                Reason::BadRequest,
            ),
            (
                Status::unavailable("tcp connect error"),
                false,
                Reason::Unreachable,
            ),
            (Status::deadline_exceeded(""), false, Reason::Timeout),
            (Status::internal(""), false, Reason::ServerError),
            (
                Status::out_of_range(
                    "Error, decoded message length too large: found 99 bytes, the limit is: 9 bytes",
                ),
                true,
                Reason::TooLarge,
            ),
            (Status::unauthenticated(""), false, Reason::Unauthorized),
        ] {
            assert_eq!(reason_of(&status, token), want, "{status:?}");
        }
    }
}
