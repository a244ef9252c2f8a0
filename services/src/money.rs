//! Money as integer minor units plus an ISO 4217 code: never a float.

use std::fmt;

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("money is missing")]
    Missing,
    #[error(
        "currency_code {0:?} is not an ISO 4217 code (three upper-case letters, e.g. \"USD\")"
    )]
    Currency(String),
    #[error("amount_minor {0} is negative")]
    Negative(i64),
    #[error("amounts in {0} and {1} cannot be added")]
    Mixed(String, String),
    #[error("amount overflows")]
    Overflow,
}

/// A non-negative amount of money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    currency: String,
    minor: i64,
}

/// True for three ASCII upper-case letters.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

impl Money {
    pub fn new(currency: &str, minor: i64) -> Result<Self, MoneyError> {
        if !is_currency_code(currency) {
            return Err(MoneyError::Currency(currency.to_owned()));
        }
        if minor < 0 {
            return Err(MoneyError::Negative(minor));
        }
        Ok(Self {
            currency: currency.to_owned(),
            minor,
        })
    }

    pub fn zero(currency: &str) -> Result<Self, MoneyError> {
        Self::new(currency, 0)
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn minor(&self) -> i64 {
        self.minor
    }

    /// `self * quantity`.
    pub fn times(&self, quantity: u32) -> Result<Self, MoneyError> {
        let minor = self
            .minor
            .checked_mul(i64::from(quantity))
            .ok_or(MoneyError::Overflow)?;
        Ok(Self {
            currency: self.currency.clone(),
            minor,
        })
    }

    pub fn plus(&self, other: &Money) -> Result<Self, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::Mixed(
                self.currency.clone(),
                other.currency.clone(),
            ));
        }
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self {
            currency: self.currency.clone(),
            minor,
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_adds() {
        let a = Money::new("USD", 250).unwrap();
        assert_eq!(a.times(3).unwrap().minor(), 750);
        assert_eq!(a.plus(&a).unwrap().minor(), 500);
        assert!(matches!(Money::new("usd", 1), Err(MoneyError::Currency(_))));
        assert!(matches!(
            Money::new("USD", -1),
            Err(MoneyError::Negative(-1))
        ));
        let e = Money::new("EUR", 1).unwrap();
        assert!(matches!(a.plus(&e), Err(MoneyError::Mixed(_, _))));
        assert!(matches!(
            Money::new("USD", i64::MAX).unwrap().times(2),
            Err(MoneyError::Overflow)
        ));
    }
}
