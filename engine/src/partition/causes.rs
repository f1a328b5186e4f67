//! Why messages are dead-lettered, as a few fixed causes, and how many went
//! each way. Each letter keeps its own reason text; the causes are for
//! counting, where the set of names must stay small (metric labels).

/// The cause of a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterCause {
    /// The function failed for good: retries spent, a permanent error, a malformed reply.
    InvocationFailed,
    /// No endpoint serves the message's function type.
    NoEndpoint,
    /// Too large for the endpoint's payload limit or for an exchange record.
    TooLarge,
    /// The message chain passed the hop limit (a loop).
    HopLimit,
    /// An input record, exchange message or timer that cannot become a message.
    BadInput,
    /// An egress message that names no declared egress or carries a bad record.
    BadEgress,
    /// Parked messages that could not be read back.
    ParkedLost,
}

impl DeadLetterCause {
    pub const ALL: [Self; 7] = [
        Self::InvocationFailed,
        Self::NoEndpoint,
        Self::TooLarge,
        Self::HopLimit,
        Self::BadInput,
        Self::BadEgress,
        Self::ParkedLost,
    ];

    /// The cause's name in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::InvocationFailed => "invocation_failed",
            Self::NoEndpoint => "no_endpoint",
            Self::TooLarge => "too_large",
            Self::HopLimit => "hop_limit",
            Self::BadInput => "bad_input",
            Self::BadEgress => "bad_egress",
            Self::ParkedLost => "parked_lost",
        }
    }
}

/// Messages dead-lettered so far, by cause (a letter for an input record
/// that never became a message counts as one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterCounts([u64; DeadLetterCause::ALL.len()]);

impl DeadLetterCounts {
    pub(super) fn add(&mut self, cause: DeadLetterCause, messages: usize) {
        self.0[cause as usize] += messages.max(1) as u64;
    }

    pub fn get(&self, cause: DeadLetterCause) -> u64 {
        self.0[cause as usize]
    }
}
