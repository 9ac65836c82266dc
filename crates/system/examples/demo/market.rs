//! The simulated market: instruments Deribit would list on the day the demo runs (expiries
//! from today's date, strikes near the simulated index), each with its tick size and the unit
//! its amounts are in.

use testkit::FakeInstrument;

/// One listed instrument of the simulation.
#[derive(Debug, Clone)]
pub struct Listed {
    /// What the fake Deribit trades.
    pub instrument: FakeInstrument,
    /// Price increment; prices are shown to its precision.
    pub tick: f64,
    /// What `amount` counts: USD for futures, the coin for options.
    pub amount_unit: &'static str,
}

/// Simulated BTC and ETH index prices, USD.
pub const BTC_INDEX: f64 = 97_250.0;
/// See [`BTC_INDEX`].
pub const ETH_INDEX: f64 = 3_420.0;

const DAY_MS: i64 = 86_400_000;
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// A calendar date (proleptic Gregorian, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Year.
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
}

impl Date {
    /// The UTC date of an epoch-ms instant.
    pub fn of_millis(ms: i64) -> Self {
        Self::of_days(ms.div_euclid(DAY_MS))
    }

    /// The date `days` after 1970-01-01 (Howard Hinnant's civil-from-days).
    pub fn of_days(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        // Both are in range by construction (1–31, 1–12).
        Date {
            year,
            month: u32::try_from(month).unwrap_or(1),
            day: u32::try_from(day).unwrap_or(1),
        }
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        let (month, year) = (
            i64::from(self.month),
            self.year - i64::from(self.month <= 2),
        );
        let era = year.div_euclid(400);
        let yoe = year.rem_euclid(400);
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// 0 = Monday … 6 = Sunday (1970-01-01 was a Thursday).
    pub fn weekday(self) -> i64 {
        (self.days() + 3).rem_euclid(7)
    }

    /// The last Friday of this date's month.
    pub fn last_friday_of_month(self) -> Self {
        let next_month = if self.month == 12 {
            Date {
                year: self.year + 1,
                month: 1,
                day: 1,
            }
        } else {
            Date {
                month: self.month + 1,
                day: 1,
                ..self
            }
        };
        let last = next_month.days() - 1;
        let back = (Date::of_days(last).weekday() - 4).rem_euclid(7);
        Date::of_days(last - back)
    }

    /// Deribit's expiry code: day without a leading zero, month, two-digit year (`26DEC25`).
    pub fn expiry_code(self) -> String {
        let month = MONTHS[usize::try_from(self.month.saturating_sub(1)).unwrap_or(0) % 12];
        format!("{}{month}{:02}", self.day, self.year.rem_euclid(100))
    }

    /// `YYYY-MM-DD`.
    pub fn iso(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The first monthly expiry (last Friday of a month) at least two days after `today`: a
/// contract that expires tomorrow trades little.
pub fn monthly_expiry(today: Date) -> Date {
    let this_month = today.last_friday_of_month();
    if this_month.days() - today.days() >= 2 {
        return this_month;
    }
    Date::of_days(this_month.days() + 7).last_friday_of_month()
}

/// The first quarterly expiry (last Friday of March, June, September, December) at least two
/// days after `today`.
pub fn quarterly_expiry(today: Date) -> Date {
    let mut candidate = monthly_expiry(today);
    while !candidate.month.is_multiple_of(3) {
        candidate = Date::of_days(candidate.days() + 7).last_friday_of_month();
    }
    candidate
}

/// Tick size and amount unit of an instrument by Deribit's conventions, for those the
/// simulation does not list (the live feed): options (`…-C`, `…-P`) trade in the coin with a
/// 0.0005 tick; BTC futures in USD at 0.5 (perpetual) or 2.5 (dated); ETH futures in USD at
/// 0.05.
pub fn conventions(name: &str) -> (f64, &'static str) {
    let coin = if name.starts_with("ETH") {
        "ETH"
    } else {
        "BTC"
    };
    if name.ends_with("-C") || name.ends_with("-P") {
        (0.0005, coin)
    } else if coin == "ETH" {
        (0.05, "USD")
    } else if name.ends_with("-PERPETUAL") {
        (0.5, "USD")
    } else {
        (2.5, "USD")
    }
}

/// `price` rounded to a multiple of `step`.
fn strike(price: f64, step: f64) -> f64 {
    (price / step).round() * step
}

/// The instruments of the simulation on `today`.
pub fn market(today: Date) -> Vec<Listed> {
    let month = monthly_expiry(today).expiry_code();
    let quarter = quarterly_expiry(today).expiry_code();
    let btc_call = strike(BTC_INDEX * 1.05, 5_000.0);
    let btc_put = strike(BTC_INDEX * 0.95, 5_000.0);
    let eth_call = strike(ETH_INDEX * 1.05, 100.0);
    let future = |name: String, currency, price, tick| Listed {
        instrument: FakeInstrument::new(&name, "future", currency, price),
        tick,
        amount_unit: "USD",
    };
    let option = |name: String, currency: &'static str, premium| Listed {
        instrument: FakeInstrument::new(&name, "option", currency, premium),
        tick: 0.0005,
        amount_unit: currency,
    };
    vec![
        future("BTC-PERPETUAL".into(), "BTC", BTC_INDEX, 0.5),
        future("ETH-PERPETUAL".into(), "ETH", ETH_INDEX, 0.05),
        future(format!("BTC-{quarter}"), "BTC", BTC_INDEX * 1.012, 2.5),
        option(format!("BTC-{month}-{btc_call:.0}-C"), "BTC", 0.0315),
        option(format!("BTC-{month}-{btc_put:.0}-P"), "BTC", 0.0240),
        option(format!("ETH-{month}-{eth_call:.0}-C"), "ETH", 0.0610),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: i64, month: u32, day: u32) -> Date {
        Date { year, month, day }
    }

    #[test]
    fn dates_round_trip_through_days() {
        assert_eq!(date(1970, 1, 1).days(), 0);
        assert_eq!(Date::of_days(0), date(1970, 1, 1));
        assert_eq!(date(2026, 12, 2).days(), 20_789);
        for days in [-1, 59, 60, 365, 11_016, 20_789, 47_482] {
            assert_eq!(Date::of_days(days).days(), days);
        }
        assert_eq!(Date::of_millis(1_780_000_000_000), date(2026, 5, 28));
        assert_eq!(date(2026, 12, 4).weekday(), 4, "a Friday");
    }

    #[test]
    fn expiries_are_last_fridays_ahead_of_today() {
        // December 2026: the last Friday is the 25th.
        assert_eq!(monthly_expiry(date(2026, 12, 2)), date(2026, 12, 25));
        assert_eq!(quarterly_expiry(date(2026, 12, 2)), date(2026, 12, 25));
        // Too close to the month's expiry: next month's.
        assert_eq!(monthly_expiry(date(2026, 12, 24)), date(2027, 1, 29));
        assert_eq!(quarterly_expiry(date(2026, 12, 24)), date(2027, 3, 26));
        assert_eq!(quarterly_expiry(date(2027, 4, 1)), date(2027, 6, 25));
        assert_eq!(date(2027, 3, 26).weekday(), 4);
    }

    #[test]
    fn names_follow_deribit_and_move_with_the_date() {
        assert_eq!(date(2025, 12, 26).expiry_code(), "26DEC25");
        assert_eq!(date(2027, 1, 1).expiry_code(), "1JAN27");
        let names =
            |d| -> Vec<String> { market(d).into_iter().map(|l| l.instrument.name).collect() };
        assert_eq!(
            names(date(2026, 12, 2)),
            [
                "BTC-PERPETUAL",
                "ETH-PERPETUAL",
                "BTC-25DEC26",
                "BTC-25DEC26-100000-C",
                "BTC-25DEC26-90000-P",
                "ETH-25DEC26-3600-C",
            ]
        );
        assert!(names(date(2027, 2, 10)).contains(&"BTC-26MAR27".to_owned()));
    }

    #[test]
    fn live_instruments_follow_deribit_conventions() {
        assert_eq!(conventions("BTC-PERPETUAL"), (0.5, "USD"));
        assert_eq!(conventions("BTC-26MAR27"), (2.5, "USD"));
        assert_eq!(conventions("ETH-PERPETUAL"), (0.05, "USD"));
        assert_eq!(conventions("ETH-25DEC26-3600-C"), (0.0005, "ETH"));
        assert_eq!(conventions("BTC-25DEC26-90000-P"), (0.0005, "BTC"));
        // The simulation lists its instruments by the same rules.
        for listed in market(date(2026, 12, 2)) {
            assert_eq!(
                conventions(&listed.instrument.name),
                (listed.tick, listed.amount_unit),
                "{}",
                listed.instrument.name
            );
        }
    }
}
