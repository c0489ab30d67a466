//! Which Stripe Entitlements features each product carries: the data a
//! feature check decides on, known per product.
//!
//! A product's map is *known* once read from Stripe (`GET
//! /v1/products/{id}/features`), even when empty; a product whose map was
//! never read (or could not be) is simply absent, and carries nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::subscription::AccessFacts;

/// Feature lookup keys of the products a decision looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    products: HashMap<String, Arc<[String]>>,
}

impl Catalog {
    pub fn new() -> Self {
        Catalog::default()
    }

    /// Records `product`'s features (its whole map).
    pub fn insert(&mut self, product: impl Into<String>, features: Arc<[String]>) {
        self.products.insert(product.into(), features);
    }

    /// The features of `product`, when its map is known.
    pub fn features_of(&self, product: &str) -> Option<&[String]> {
        self.products.get(product).map(|f| &f[..])
    }

    pub fn knows(&self, product: &str) -> bool {
        self.products.contains_key(product)
    }

    /// The product of `record` that carries `feature`, if any (the first,
    /// in item order).
    pub fn carrier<'r>(&self, record: &'r impl AccessFacts, feature: &str) -> Option<&'r str> {
        record
            .items()
            .iter()
            .filter_map(|item| item.product_id.as_deref())
            .find(|product| {
                self.features_of(product)
                    .is_some_and(|features| features.iter().any(|f| f == feature))
            })
    }

    /// Every feature known for `record`'s products.
    pub fn features_for<'c>(&'c self, record: &impl AccessFacts) -> BTreeSet<&'c str> {
        record
            .items()
            .iter()
            .filter_map(|item| item.product_id.as_deref())
            .filter_map(|product| self.products.get(product))
            .flat_map(|features| features.iter().map(String::as_str))
            .collect()
    }
}

/// The products of `records`' items: what a catalog for them must know.
pub fn products_of<R: AccessFacts>(records: &[R]) -> BTreeSet<&str> {
    records
        .iter()
        .flat_map(|r| r.items().iter())
        .filter_map(|item| item.product_id.as_deref())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::{Item, SubscriptionRecord};

    fn record(products: &[&str]) -> SubscriptionRecord {
        SubscriptionRecord {
            items: products
                .iter()
                .map(|p| Item {
                    price_id: format!("price_{p}"),
                    product_id: Some((*p).to_owned()),
                    lookup_key: None,
                })
                .collect(),
            ..SubscriptionRecord::placeholder("sub_1", "cus_1")
        }
    }

    #[test]
    fn the_carrier_is_the_first_product_with_the_feature() {
        let mut catalog = Catalog::new();
        catalog.insert("prod_basic", Arc::from(vec!["reports".to_owned()]));
        catalog.insert(
            "prod_addon",
            Arc::from(vec!["export".to_owned(), "sso".to_owned()]),
        );
        let r = record(&["prod_basic", "prod_addon", "prod_unknown"]);
        assert_eq!(catalog.carrier(&r, "export"), Some("prod_addon"));
        assert_eq!(catalog.carrier(&r, "reports"), Some("prod_basic"));
        assert_eq!(catalog.carrier(&r, "audit"), None);
        assert_eq!(
            catalog.features_for(&r).into_iter().collect::<Vec<_>>(),
            ["export", "reports", "sso"]
        );
        assert!(!catalog.knows("prod_unknown"));
    }
}
