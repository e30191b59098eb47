//! "Is this number on WhatsApp": answers cached (positive 24 h, negative 1 h) and, for the
//! numbers that must be asked, a per-session quota. Bulk number checks are what gets a number
//! banned, so the limit is on the linked number doing the asking, whoever the caller is.

use std::num::NonZeroU32;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
// Tokio's clock, so tests can pause and advance it past the TTLs.
use tokio::time::Instant;

use crate::domain::{PhoneNumber, SessionId};

/// How long a "yes" is trusted.
pub const POSITIVE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a "no" is trusted (people join WhatsApp).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(3600);

/// The answer for one number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactCheck {
    /// The number asked, digits only.
    pub phone: String,
    #[serde(rename = "onWhatsApp")]
    #[schema(rename = "onWhatsApp")]
    pub on_whatsapp: bool,
    /// Its user JID, when on WhatsApp.
    pub jid: Option<String>,
    /// Its LID (`…@lid`), when WhatsApp gives it.
    pub lid: Option<String>,
}

/// The cache and the quotas.
pub struct ContactBook {
    cache: DashMap<String, (ContactCheck, Instant)>,
    quotas: DashMap<SessionId, DefaultDirectRateLimiter>,
    per_minute: Option<NonZeroU32>,
}

impl ContactBook {
    /// `per_minute` numbers may be asked of WhatsApp per session, all at once or spread over the
    /// minute (a batch larger than that is always refused); `0` turns the quota off.
    pub fn new(per_minute: u32) -> ContactBook {
        ContactBook { cache: DashMap::new(), quotas: DashMap::new(), per_minute: NonZeroU32::new(per_minute) }
    }

    /// A cached answer still fresh.
    pub fn cached(&self, phone: &PhoneNumber) -> Option<ContactCheck> {
        let entry = self.cache.get(phone.digits())?;
        let (check, at) = entry.value();
        let ttl = if check.on_whatsapp { POSITIVE_TTL } else { NEGATIVE_TTL };
        (at.elapsed() < ttl).then(|| check.clone())
    }

    pub fn remember(&self, check: &ContactCheck) {
        self.cache.insert(check.phone.clone(), (check.clone(), Instant::now()));
    }

    /// Takes `n` numbers from `session`'s quota, or says how long to wait.
    pub fn take(&self, session: &SessionId, n: u32) -> Result<(), Duration> {
        let (Some(per_minute), Some(n)) = (self.per_minute, NonZeroU32::new(n)) else { return Ok(()) };
        let limiter =
            self.quotas.entry(session.clone()).or_insert_with(|| RateLimiter::direct(Quota::per_minute(per_minute)));
        match limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(DefaultClock::default().now())),
            // More than a burst at once can never pass.
            Err(_) => Err(Duration::from_secs(60)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn answers_expire_a_no_after_an_hour_and_a_yes_after_a_day() {
        let book = ContactBook::new(50);
        let yes = PhoneNumber::parse("51987654321").unwrap();
        let no = PhoneNumber::parse("51987654322").unwrap();
        assert_eq!(book.cached(&yes), None);
        let on = ContactCheck { phone: yes.digits().into(), on_whatsapp: true, jid: None, lid: None };
        let off = ContactCheck { phone: no.digits().into(), on_whatsapp: false, jid: None, lid: None };
        book.remember(&on);
        book.remember(&off);

        tokio::time::advance(NEGATIVE_TTL - Duration::from_secs(1)).await;
        assert_eq!((book.cached(&yes), book.cached(&no)), (Some(on.clone()), Some(off.clone())), "both still fresh");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(book.cached(&no), None, "a no is asked again after an hour (people join WhatsApp)");
        assert_eq!(book.cached(&yes), Some(on.clone()));

        tokio::time::advance(POSITIVE_TTL - NEGATIVE_TTL - Duration::from_secs(2)).await;
        assert_eq!(book.cached(&yes), Some(on.clone()), "a yes holds for a day");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(book.cached(&yes), None, "and then is asked again");
        // Remembering again starts a fresh day.
        book.remember(&on);
        assert_eq!(book.cached(&yes), Some(on));
    }

    #[test]
    fn quotas_are_per_session() {
        let book = ContactBook::new(50);
        let a = SessionId::parse("a").unwrap();
        let b = SessionId::parse("b").unwrap();
        assert!(book.take(&a, 50).is_ok(), "one full batch");
        assert!(book.take(&a, 1).is_err(), "then the quota refills at 50 a minute");
        assert!(ContactBook::new(10).take(&a, 11).is_err(), "more than a minute's quota never passes");
        assert!(book.take(&b, 1).is_ok(), "another number has its own");
        assert!(ContactBook::new(0).take(&a, 50).is_ok(), "0 is off");
    }
}
