//! Feature maps for feature checks: which Entitlements features each
//! product carries, from memory, else the store, else one bounded read of
//! Stripe's `GET /v1/products/{id}/features` per product, shared by every
//! check waiting on that product.
//!
//! A map read from Stripe is stored (both in the database and in memory)
//! unless a `product.updated` for that product committed meanwhile; the
//! event forgets the map everywhere, and the next check reads it again.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::cache::SubjectCache;
use crate::catalog::{self, Catalog};
use crate::clock::Clock;
use crate::store::{Store, StoreError};
use crate::stripe::StripeClient;
use crate::subject::Subject;
use crate::subscription::AccessFacts;

type SharedRead = Shared<BoxFuture<'static, Result<Arc<[String]>, String>>>;

pub struct Features {
    store: Arc<dyn Store>,
    cache: Arc<SubjectCache>,
    client: Option<Arc<StripeClient>>,
    clock: Arc<dyn Clock>,
    /// The longest a check waits for maps it doesn't know; a map that
    /// arrives later still lands for the next check.
    timeout: Duration,
    /// Reads under way, by product.
    inflight: Mutex<HashMap<String, SharedRead>>,
}

impl Features {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<SubjectCache>,
        client: Option<Arc<StripeClient>>,
        clock: Arc<dyn Clock>,
        timeout: Duration,
    ) -> Self {
        Features {
            store,
            cache,
            client,
            clock,
            timeout,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// A catalog for `records`: every product map known in memory or the
    /// store, plus those Stripe gives within one bounded wait; and, for the
    /// customers of records with a product whose map can't be had now,
    /// their active entitlement summaries.
    pub async fn catalog<R: AccessFacts>(
        self: &Arc<Self>,
        records: &[R],
    ) -> Result<Catalog, StoreError> {
        let mut catalog = self.product_maps(catalog::products_of(records)).await?;
        let customers = catalog::needing_summaries(records, &catalog);
        if !customers.is_empty() {
            self.add_summaries(&mut catalog, customers).await?;
        }
        Ok(catalog)
    }

    /// The summaries of `customers`, from memory, else the store.
    async fn add_summaries(
        &self,
        catalog: &mut Catalog,
        customers: BTreeSet<&str>,
    ) -> Result<(), StoreError> {
        let mut missing = Vec::new();
        for customer in customers {
            match self.cache.summary(customer) {
                Some(Some(features)) => catalog.insert_summary(customer, features),
                Some(None) => {}
                None => missing.push((
                    customer.to_owned(),
                    self.cache.ticket(&Subject::Customer(customer.to_owned())),
                )),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = missing.iter().map(|(c, _)| c.clone()).collect();
        let mut found: HashMap<String, Arc<[String]>> = self
            .store
            .entitlement_summaries(&ids)
            .await?
            .into_iter()
            .map(|(customer, features)| (customer, features.into()))
            .collect();
        for (customer, ticket) in missing {
            let summary = found.remove(&customer);
            self.cache
                .insert_summary(&customer, ticket, summary.clone());
            if let Some(features) = summary {
                catalog.insert_summary(customer, features);
            }
        }
        Ok(())
    }

    /// Every map of `products` known in memory or the store, plus those
    /// Stripe gives within one bounded wait. A product whose map can't be
    /// had now is left out (unknown).
    async fn product_maps(
        self: &Arc<Self>,
        products: BTreeSet<&str>,
    ) -> Result<Catalog, StoreError> {
        let mut catalog = Catalog::new();
        let mut missing = Vec::new();
        for product in products {
            match self.cache.product_features(product) {
                Some(features) => catalog.insert(product, features),
                None => missing.push(product.to_owned()),
            }
        }
        if missing.is_empty() {
            return Ok(catalog);
        }
        let ticket = self.cache.product_ticket();
        for (product, features) in self.store.product_features(&missing).await? {
            let features: Arc<[String]> = features.into();
            self.cache
                .insert_product(&product, features.clone(), ticket);
            catalog.insert(product, features);
        }
        let unread: Vec<String> = missing.into_iter().filter(|p| !catalog.knows(p)).collect();
        if unread.is_empty() || self.client.is_none() {
            return Ok(catalog);
        }
        let reads = futures::future::join_all(unread.iter().map(|p| self.read(p)));
        match tokio::time::timeout(self.timeout, reads).await {
            Ok(results) => {
                for (product, result) in unread.into_iter().zip(results) {
                    match result {
                        Ok(features) => catalog.insert(product, features),
                        Err(e) => {
                            tracing::warn!(product, error = %e, "product features unknown")
                        }
                    }
                }
            }
            Err(_) => tracing::warn!(
                products = unread.len(),
                "product features not read from stripe within the refresh timeout"
            ),
        }
        Ok(catalog)
    }

    /// Joins or starts the read of `product`'s map. The read runs as its
    /// own task, so it finishes (and is stored) even when every check
    /// waiting for it has given up.
    fn read(self: &Arc<Self>, product: &str) -> SharedRead {
        let mut inflight = self.inflight.lock().expect("BUG: features map poisoned");
        if let Some(read) = inflight.get(product) {
            return read.clone();
        }
        let this = self.clone();
        let key = product.to_owned();
        let task = tokio::spawn(async move {
            let result = this.read_now(&key).await;
            this.inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            result
        });
        let read = async move {
            task.await
                .unwrap_or_else(|_| Err("product features read failed".to_owned()))
        }
        .boxed()
        .shared();
        inflight.insert(product.to_owned(), read.clone());
        read
    }

    /// Re-reads every known map from Stripe (the reconciler's sweep), so a
    /// feature attached or removed without a `product.updated` reaching
    /// us is noticed; a map that changed is invalidated on every replica.
    /// Returns how many maps changed.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let Some(client) = self.client.as_ref() else {
            return Ok(0);
        };
        let products = self.store.known_products().await?;
        let stored: HashMap<String, Vec<String>> = self
            .store
            .product_features(&products)
            .await?
            .into_iter()
            .collect();
        let mut changed = 0;
        for product in products {
            let read_at_ms = self.clock.now_ms();
            let features = match client.product_features(&product).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(product, error = %e, "sweep could not re-read product features");
                    continue;
                }
            };
            if stored.get(&product) == Some(&features) {
                continue;
            }
            let mut tx = self.store.begin().await?;
            tx.save_product_features(&product, &features, read_at_ms)
                .await?;
            let mut affected = crate::subject::Affected::default();
            affected.add_product(&product);
            tx.publish_changes(&affected).await?;
            tx.commit().await?;
            self.cache.invalidate(&affected);
            tracing::info!(
                product,
                features = features.len(),
                "product features changed in stripe"
            );
            changed += 1;
        }
        Ok(changed)
    }

    async fn read_now(&self, product: &str) -> Result<Arc<[String]>, String> {
        let client = self.client.as_ref().ok_or("no STRIPE_API_KEY")?;
        let ticket = self.cache.product_ticket();
        let read_at_ms = self.clock.now_ms();
        let features = client
            .product_features(product)
            .await
            .map_err(|e| e.to_string())?;
        let mut tx = self.store.begin().await.map_err(|e| e.to_string())?;
        tx.save_product_features(product, &features, read_at_ms)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        tracing::info!(
            product,
            features = features.len(),
            "product features read from stripe"
        );
        let features: Arc<[String]> = features.into();
        self.cache.insert_product(product, features.clone(), ticket);
        Ok(features)
    }
}
