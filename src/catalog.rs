//! Which Stripe Entitlements features each product carries: the data a
//! feature check decides on, known per product.
//!
//! A product's map is *known* once read from Stripe (`GET
//! /v1/products/{id}/features`), even when empty. A product whose map was
//! never read (or could not be) is unknown: it carries a feature only when
//! its customer's active entitlement summary (Stripe's own list, from
//! `entitlements.active_entitlement_summary.updated`) names it. A known map
//! always wins over a summary.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::subscription::AccessFacts;

/// Feature lookup keys of the products a decision looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    products: HashMap<String, Arc<[String]>>,
    /// Active entitlement summaries by customer: the fallback for a
    /// subscription whose product's map is unknown.
    summaries: HashMap<String, Arc<[String]>>,
}

/// Which data said a product carries a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The product's feature map, read from Stripe.
    ProductMap,
    /// The customer's active entitlement summary, because the product's
    /// map is unknown.
    Summary,
}

/// The product of a subscription that carries a feature, and what says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carrier<'r> {
    pub product: &'r str,
    pub source: Source,
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

    /// Records `customer`'s active entitlement summary (feature lookup
    /// keys).
    pub fn insert_summary(&mut self, customer: impl Into<String>, features: Arc<[String]>) {
        self.summaries.insert(customer.into(), features);
    }

    /// The product of `record` that carries `feature`, if any: the first,
    /// in item order, whose map has it; else the first whose map is
    /// unknown, when the customer's summary names the feature.
    pub fn carrier<'r>(&self, record: &'r impl AccessFacts, feature: &str) -> Option<Carrier<'r>> {
        let has = |features: &[String]| features.iter().any(|f| f == feature);
        let mut products = products(record);
        if let Some(product) = products
            .clone()
            .find(|product| self.features_of(product).is_some_and(has))
        {
            return Some(Carrier {
                product,
                source: Source::ProductMap,
            });
        }
        let summary = self.summaries.get(record.customer_id())?;
        if !has(summary) {
            return None;
        }
        products
            .find(|product| !self.knows(product))
            .map(|product| Carrier {
                product,
                source: Source::Summary,
            })
    }

    /// Every feature `record`'s products carry: those of known maps, and,
    /// when one of its products' maps is unknown, its customer's summary.
    pub fn features_for<'c>(&'c self, record: &impl AccessFacts) -> BTreeSet<&'c str> {
        let known = products(record)
            .filter_map(|product| self.products.get(product))
            .flat_map(|features| features.iter().map(String::as_str));
        let summary = self
            .lacks_a_map(record)
            .then(|| self.summaries.get(record.customer_id()))
            .flatten()
            .into_iter()
            .flat_map(|features| features.iter().map(String::as_str));
        known.chain(summary).collect()
    }

    /// Whether one of `record`'s products has no known map: only then may
    /// its customer's summary speak for it.
    fn lacks_a_map(&self, record: &impl AccessFacts) -> bool {
        products(record).any(|product| !self.knows(product))
    }
}

/// The products of `record`'s items, in item order.
fn products<R: AccessFacts>(record: &R) -> impl Iterator<Item = &str> + Clone {
    record
        .items()
        .iter()
        .filter_map(|item| item.product_id.as_deref())
}

/// Customers of `records` with a product whose map `catalog` doesn't know:
/// whose summaries a decision may need.
pub fn needing_summaries<'r, R: AccessFacts>(
    records: &'r [R],
    catalog: &Catalog,
) -> BTreeSet<&'r str> {
    records
        .iter()
        .filter(|r| catalog.lacks_a_map(*r))
        .map(|r| r.customer_id())
        .collect()
}

/// The products of `records`' items: what a catalog for them must know.
pub fn products_of<R: AccessFacts>(records: &[R]) -> BTreeSet<&str> {
    records.iter().flat_map(products).collect()
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
        let product = |f| catalog.carrier(&r, f).map(|c| c.product);
        assert_eq!(product("export"), Some("prod_addon"));
        assert_eq!(product("reports"), Some("prod_basic"));
        assert_eq!(product("audit"), None);
        assert_eq!(
            catalog.features_for(&r).into_iter().collect::<Vec<_>>(),
            ["export", "reports", "sso"]
        );
        assert!(!catalog.knows("prod_unknown"));
    }

    #[test]
    fn a_summary_speaks_only_for_products_whose_maps_are_unknown() {
        let mut catalog = Catalog::new();
        catalog.insert("prod_basic", Arc::from(vec!["reports".to_owned()]));
        catalog.insert_summary(
            "cus_1",
            Arc::from(vec!["export".to_owned(), "reports".to_owned()]),
        );
        let known_only = record(&["prod_basic"]);
        assert_eq!(catalog.carrier(&known_only, "export"), None);
        assert_eq!(
            catalog
                .features_for(&known_only)
                .into_iter()
                .collect::<Vec<_>>(),
            ["reports"]
        );

        let with_unknown = record(&["prod_basic", "prod_new"]);
        assert_eq!(
            catalog.carrier(&with_unknown, "reports"),
            Some(Carrier {
                product: "prod_basic",
                source: Source::ProductMap
            }),
            "a known map wins over the summary"
        );
        assert_eq!(
            catalog.carrier(&with_unknown, "export"),
            Some(Carrier {
                product: "prod_new",
                source: Source::Summary
            })
        );
        assert_eq!(catalog.carrier(&with_unknown, "sso"), None);
        assert_eq!(
            catalog
                .features_for(&with_unknown)
                .into_iter()
                .collect::<Vec<_>>(),
            ["export", "reports"]
        );
        assert_eq!(
            needing_summaries(&[known_only, with_unknown], &catalog)
                .into_iter()
                .collect::<Vec<_>>(),
            ["cus_1"]
        );
    }

    #[test]
    fn another_customers_summary_carries_nothing() {
        let mut catalog = Catalog::new();
        catalog.insert_summary("cus_2", Arc::from(vec!["export".to_owned()]));
        let r = record(&["prod_new"]);
        assert_eq!(catalog.carrier(&r, "export"), None);
        assert!(catalog.features_for(&r).is_empty());
    }
}
