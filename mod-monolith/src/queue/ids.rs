//! Message ids: a message's sequence number in 20 zero-padded decimal digits,
//! so that ids sort like offers.

use mod_api::MessageId;

/// Digits of an id: enough for every `u64`.
const ID_DIGITS: usize = 20;

/// The id of message `seq`: zero-padded so ids sort like offers. (By hand: one
/// is made per offer and per delivery, and `format!` costs several times more.)
pub(super) fn message_id(seq: u64) -> MessageId {
    let mut digits = [b'0'; ID_DIGITS];
    let mut rest = seq;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // ASCII digits are UTF-8, so this never yields the empty fallback.
    MessageId(std::str::from_utf8(&digits).unwrap_or_default().to_owned())
}

/// The sequence number of `id`, if it is one of ours (any string of decimal
/// digits that fits a `u64`; `str::parse` alone would also take a `+` sign).
pub(super) fn parse_id(id: &MessageId) -> Option<u64> {
    let text = id.0.as_str();
    if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}
