//! Product feature maps: stored whole, read back for many products at once,
//! and forgotten by a product change so that no older read lands over it.
//! Customers' active entitlement summaries: the newest one kept.

use super::*;

on_both_backends!(
    feature_maps_are_stored_whole_and_read_back_for_the_products_asked,
    a_forget_hides_the_map_and_only_a_later_read_stores_it_again,
    known_products_are_those_with_a_map,
    a_transaction_reads_the_maps_it_may_forget,
    only_a_summary_as_of_the_same_time_or_later_replaces_the_stored_one,
);

async fn save(store: &Arc<dyn Store>, product: &str, features: &[&str], read_at: i64) {
    let features: Vec<String> = features.iter().map(|f| (*f).to_owned()).collect();
    let mut tx = store.begin().await.unwrap();
    tx.save_product_features(product, &features, read_at)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn maps(store: &Arc<dyn Store>, products: &[&str]) -> Vec<(String, Vec<String>)> {
    let products: Vec<String> = products.iter().map(|p| (*p).to_owned()).collect();
    let mut maps = store.product_features(&products).await.unwrap();
    maps.sort();
    maps
}

fn map(product: &str, features: &[&str]) -> (String, Vec<String>) {
    (
        product.to_owned(),
        features.iter().map(|f| (*f).to_owned()).collect(),
    )
}

async fn feature_maps_are_stored_whole_and_read_back_for_the_products_asked(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    assert!(maps(&store, &[]).await.is_empty());
    save(&store, "prod_a", &["export", "sso"], 100).await;
    save(&store, "prod_b", &[], 100).await;
    save(&store, "prod_c", &["reports"], 100).await;
    assert_eq!(
        maps(&store, &["prod_a", "prod_b", "prod_unknown"]).await,
        [map("prod_a", &["export", "sso"]), map("prod_b", &[])],
        "an empty map is known; an unread product is left out"
    );
    // A later read replaces the whole map; an older one does not.
    save(&store, "prod_a", &["export"], 200).await;
    save(&store, "prod_a", &["export", "sso", "old"], 150).await;
    assert_eq!(
        maps(&store, &["prod_a"]).await,
        [map("prod_a", &["export"])]
    );
}

async fn a_forget_hides_the_map_and_only_a_later_read_stores_it_again(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    save(&store, "prod_a", &["export"], 100).await;
    let forget = |at: i64| {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            tx.forget_product_features("prod_a", at).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    // A change as of the moment of the read: forgotten.
    forget(100).await;
    assert!(maps(&store, &["prod_a"]).await.is_empty());
    // A read begun by then can't land.
    save(&store, "prod_a", &["export"], 100).await;
    assert!(maps(&store, &["prod_a"]).await.is_empty());
    save(&store, "prod_a", &["export", "sso"], 101).await;
    assert_eq!(
        maps(&store, &["prod_a"]).await,
        [map("prod_a", &["export", "sso"])]
    );
    // A change older than the stored read is already in it.
    forget(50).await;
    assert_eq!(maps(&store, &["prod_a"]).await.len(), 1);
    // Forgetting a product never read leaves it unknown.
    let mut tx = store.begin().await.unwrap();
    tx.forget_product_features("prod_new", 10).await.unwrap();
    tx.commit().await.unwrap();
    assert!(maps(&store, &["prod_new"]).await.is_empty());
}

async fn known_products_are_those_with_a_map(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    assert!(store.known_products().await.unwrap().is_empty());
    save(&store, "prod_b", &[], 100).await;
    save(&store, "prod_a", &["export"], 100).await;
    save(&store, "prod_c", &["sso"], 100).await;
    let mut tx = store.begin().await.unwrap();
    tx.forget_product_features("prod_c", 200).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.known_products().await.unwrap(), ["prod_a", "prod_b"]);
}

async fn a_transaction_reads_the_maps_it_may_forget(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    save(&store, "prod_a", &["export"], 100).await;
    save(&store, "prod_b", &["sso"], 100).await;
    let mut tx = store.begin().await.unwrap();
    let asked = ["prod_a".to_owned(), "prod_unknown".to_owned()];
    assert_eq!(
        tx.product_features(&asked).await.unwrap(),
        [map("prod_a", &["export"])]
    );
    tx.forget_product_features("prod_a", 200).await.unwrap();
    assert!(
        tx.product_features(&asked).await.unwrap().is_empty(),
        "the transaction sees its own forget"
    );
    assert!(tx.product_features(&[]).await.unwrap().is_empty());
    tx.rollback().await.unwrap();
    assert_eq!(
        maps(&store, &["prod_a"]).await,
        [map("prod_a", &["export"])]
    );
}

async fn only_a_summary_as_of_the_same_time_or_later_replaces_the_stored_one(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let put = |customer: &'static str, features: &'static [&'static str], as_of: i64| {
        let store = store.clone();
        async move {
            let features: Vec<String> = features.iter().map(|f| (*f).to_owned()).collect();
            let mut tx = store.begin().await.unwrap();
            let stored = tx
                .save_entitlement_summary(customer, &features, as_of, 1)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            stored
        }
    };
    let summaries = |customers: &[&str]| {
        let store = store.clone();
        let customers: Vec<String> = customers.iter().map(|c| (*c).to_owned()).collect();
        async move {
            let mut s = store.entitlement_summaries(&customers).await.unwrap();
            s.sort();
            s
        }
    };
    assert!(summaries(&[]).await.is_empty());
    assert!(put("cus_a", &["export", "sso"], 1_000).await);
    assert!(put("cus_b", &[], 1_000).await);
    assert!(!put("cus_a", &["export"], 999).await, "older: not stored");
    assert_eq!(
        summaries(&["cus_a", "cus_b", "cus_none"]).await,
        [map("cus_a", &["export", "sso"]), map("cus_b", &[])]
    );
    assert!(put("cus_a", &["audit"], 1_000).await, "as of the same time");
    assert!(put("cus_a", &["export"], 2_000).await);
    assert_eq!(summaries(&["cus_a"]).await, [map("cus_a", &["export"])]);
}
