//! Envelopes: every message between two peers, request or response, with
//! who sent it, to whom, and the correlation id that pairs a response with
//! its request.

use super::{NodeId, Peer, Request, Response};
use crate::error::Result;

/// What an envelope carries: a request, or the answer to one (a response,
/// or the error that stands for one).
#[derive(Debug, Clone)]
pub enum Message {
    /// A request; the receiver answers it with a [`Message::Response`]
    /// carrying the same correlation id (except acks=0 produces, which are
    /// never answered).
    Request(Request),
    /// The answer to the request with the same correlation id.
    Response(Result<Response>),
}

impl Message {
    /// The API's name, as Kafka spells it (`"Produce"`, `"Fetch"`, …); an
    /// error answer is `"Error"`.
    pub fn api_name(&self) -> &'static str {
        match self {
            Message::Request(request) => request.api_name(),
            Message::Response(Ok(response)) => response.api_name(),
            Message::Response(Err(_)) => "Error",
        }
    }
}

/// One message on its way from `from` to `to`.
///
/// A sender numbers its requests with correlation ids of its own choosing
/// (unique among its unanswered requests); the receiver copies the id into
/// its answer, and the sender matches answers to requests by it, never by
/// arrival order. The sender also owns the deadline of every request it has
/// outstanding: a request whose answer does not come is its timeout, not the
/// transport's.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The sender.
    pub from: Peer,
    /// The receiver.
    pub to: Peer,
    /// Pairs a response with its request.
    pub correlation_id: u64,
    /// The request or response.
    pub message: Message,
}

/// Where the answer to a request goes: its sender and its correlation id.
/// A node that keeps a request for later (a parked fetch) keeps this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    /// The requester.
    pub peer: Peer,
    /// The request's correlation id.
    pub correlation_id: u64,
}

impl ReplyTo {
    /// The answer `from` sends to this requester.
    pub fn answer(self, from: Peer, response: Result<Response>) -> Envelope {
        Envelope {
            from,
            to: self.peer,
            correlation_id: self.correlation_id,
            message: Message::Response(response),
        }
    }
}

impl Envelope {
    /// Where this envelope's answer goes.
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            peer: self.from,
            correlation_id: self.correlation_id,
        }
    }

    /// A request from `from` to `to`.
    pub fn request(from: Peer, to: Peer, correlation_id: u64, request: Request) -> Self {
        Self {
            from,
            to,
            correlation_id,
            message: Message::Request(request),
        }
    }

    /// The answer to this envelope's request: addressed back to its sender,
    /// with its correlation id.
    pub fn reply(&self, response: Result<Response>) -> Self {
        self.reply_to().answer(self.to, response)
    }

    /// What the sender of request `correlation_id` to node `node` gets when
    /// the connection closes before the answer: a network error, as its
    /// answer.
    pub fn connection_closed(
        node: NodeId,
        requester: Peer,
        correlation_id: u64,
        reason: &str,
    ) -> Self {
        Self {
            from: Peer::Broker(node),
            to: requester,
            correlation_id,
            message: Message::Response(Err(crate::Error::Network {
                node,
                reason: reason.to_string(),
            })),
        }
    }
}
