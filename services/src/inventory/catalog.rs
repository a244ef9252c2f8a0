//! The catalog inventory starts with: a built-in seed so `PlaceOrder` works
//! out of the box, or a JSON file (`--catalog`).

use std::path::Path;

use serde::Deserialize;

use crate::money::{Money, MoneyError};

/// Currency of the built-in catalog.
pub const SEED_CURRENCY: &str = "USD";

/// Why a catalog was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading catalog {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog {path} is not valid JSON: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("catalog is empty")]
    Empty,
    #[error("catalog item {sku:?}: {source}")]
    Price {
        sku: String,
        #[source]
        source: MoneyError,
    },
    #[error("catalog item {0:?} appears twice")]
    Duplicate(String),
    #[error("catalog item has an empty sku")]
    EmptySku,
    #[error("catalog item {0:?} has price 0; payment takes no zero charges, so every order for it would fail")]
    Free(String),
    #[error("catalog mixes currencies {0} and {1}: one catalog, one currency")]
    MixedCurrencies(String, String),
}

/// One SKU with its starting stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogItem {
    pub sku: String,
    pub name: String,
    pub unit_price: Money,
    pub stock: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileItem {
    sku: String,
    name: String,
    /// Minor units, e.g. cents.
    price_minor: i64,
    currency_code: String,
    stock: u32,
}

fn item(sku: &str, name: &str, cents: i64, stock: u32) -> CatalogItem {
    CatalogItem {
        sku: sku.to_owned(),
        name: name.to_owned(),
        unit_price: Money::new(SEED_CURRENCY, cents).unwrap_or_else(|_| unreachable!()),
        stock,
    }
}

/// The built-in catalog. `sku-load` has stock for long load runs
/// (`meshctl load` orders it).
pub fn seed() -> Vec<CatalogItem> {
    vec![
        item("sku-espresso", "Espresso beans, 1 kg", 1_850, 1_000),
        item("sku-grinder", "Burr grinder", 12_900, 50),
        item("sku-mug", "Ceramic mug", 900, 500),
        item("sku-filter", "Paper filters, 100", 450, 2_000),
        item("sku-load", "Load-test item", 100, 100_000_000),
    ]
}

/// Checks a catalog: non-empty, unique SKUs, one currency.
pub fn validate(items: &[CatalogItem]) -> Result<(), CatalogError> {
    let first = items.first().ok_or(CatalogError::Empty)?;
    let mut seen = std::collections::HashSet::new();
    for i in items {
        if i.sku.is_empty() {
            return Err(CatalogError::EmptySku);
        }
        if !seen.insert(i.sku.as_str()) {
            return Err(CatalogError::Duplicate(i.sku.clone()));
        }
        if i.unit_price.minor() == 0 {
            return Err(CatalogError::Free(i.sku.clone()));
        }
        if i.unit_price.currency() != first.unit_price.currency() {
            return Err(CatalogError::MixedCurrencies(
                first.unit_price.currency().to_owned(),
                i.unit_price.currency().to_owned(),
            ));
        }
    }
    Ok(())
}

/// Reads a JSON array of `{sku, name, price_minor, currency_code, stock}`.
pub fn load(path: &Path) -> Result<Vec<CatalogItem>, CatalogError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
        path: p.clone(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
        CatalogError::Json { source, .. } => CatalogError::Json { path: p, source },
        other => other,
    })
}

/// Parses catalog JSON (see [`load`]).
pub fn parse(text: &str) -> Result<Vec<CatalogItem>, CatalogError> {
    let raw: Vec<FileItem> = serde_json::from_str(text).map_err(|source| CatalogError::Json {
        path: "<inline>".to_owned(),
        source,
    })?;
    let items = raw
        .into_iter()
        .map(|r| {
            let unit_price = Money::new(&r.currency_code, r.price_minor).map_err(|source| {
                CatalogError::Price {
                    sku: r.sku.clone(),
                    source,
                }
            })?;
            Ok(CatalogItem {
                sku: r.sku,
                name: r.name,
                unit_price,
                stock: r.stock,
            })
        })
        .collect::<Result<Vec<_>, CatalogError>>()?;
    validate(&items)?;
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_is_valid_and_has_the_documented_skus() {
        let s = seed();
        validate(&s).unwrap();
        assert!(s.iter().any(|i| i.sku == "sku-espresso"));
        assert!(s
            .iter()
            .any(|i| i.sku == "sku-load" && i.stock >= 10_000_000));
    }

    #[test]
    fn file_format_and_its_errors() {
        let ok =
            parse(r#"[{"sku":"a","name":"A","price_minor":5,"currency_code":"EUR","stock":3}]"#)
                .unwrap();
        assert_eq!(ok[0].unit_price, Money::new("EUR", 5).unwrap());
        assert!(matches!(parse("[]"), Err(CatalogError::Empty)));
        assert!(matches!(parse("{"), Err(CatalogError::Json { .. })));
        let dup = r#"[{"sku":"a","name":"A","price_minor":5,"currency_code":"EUR","stock":3},
                      {"sku":"a","name":"B","price_minor":5,"currency_code":"EUR","stock":3}]"#;
        assert!(matches!(parse(dup), Err(CatalogError::Duplicate(_))));
        let mixed = r#"[{"sku":"a","name":"A","price_minor":5,"currency_code":"EUR","stock":3},
                        {"sku":"b","name":"B","price_minor":5,"currency_code":"USD","stock":3}]"#;
        assert!(matches!(
            parse(mixed),
            Err(CatalogError::MixedCurrencies(_, _))
        ));
        let neg = r#"[{"sku":"a","name":"A","price_minor":-5,"currency_code":"EUR","stock":3}]"#;
        assert!(matches!(parse(neg), Err(CatalogError::Price { .. })));
        let free = r#"[{"sku":"a","name":"A","price_minor":0,"currency_code":"EUR","stock":3}]"#;
        assert!(
            matches!(parse(free), Err(CatalogError::Free(_))),
            "{:?}",
            parse(free)
        );
    }
}
