//! The subscriptions lone webhooks were last written on, by customer, so
//! that the next lone webhook of a customer decides on them without
//! reading the store first.
//!
//! What is kept here may be out of date: another replica, the admin's
//! review resolution or a transaction of this writer may have written the
//! row since. It is only ever a guess: the unlocked write checks every
//! column against the stored row and writes nothing when they differ (see
//! [`crate::store::Store::record_and_save_if_unchanged`]). A customer is
//! forgotten whenever a batch of this writer writes it in a transaction,
//! so a guess that is wrong costs one statement, once.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::subscription::SubscriptionRecord;

/// Most customers kept. Past it everything is forgotten at once: the
/// customers of lone webhooks come back soon, the rest never did.
const MOST: usize = 4096;

#[derive(Default)]
pub(super) struct Known {
    customers: Mutex<HashMap<String, Vec<SubscriptionRecord>>>,
}

impl Known {
    /// The subscriptions of `customer` as last written here, if kept.
    pub(super) fn get(&self, customer: &str) -> Option<Vec<SubscriptionRecord>> {
        self.lock().get(customer).cloned()
    }

    /// Keeps `records`, all of `customer`'s subscriptions as stored now.
    pub(super) fn remember(&self, customer: &str, records: Vec<SubscriptionRecord>) {
        let mut customers = self.lock();
        if customers.len() >= MOST && !customers.contains_key(customer) {
            customers.clear();
        }
        customers.insert(customer.to_owned(), records);
    }

    pub(super) fn forget<'a>(&self, customers: impl IntoIterator<Item = &'a String>) {
        let mut kept = self.lock();
        for customer in customers {
            kept.remove(customer);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<SubscriptionRecord>>> {
        self.customers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_is_kept_until_forgotten_and_all_are_dropped_past_the_bound() {
        let known = Known::default();
        let record = SubscriptionRecord::placeholder("sub_1", "cus_1");
        known.remember("cus_1", vec![record.clone()]);
        assert_eq!(known.get("cus_1"), Some(vec![record.clone()]));
        known.forget(&["cus_1".to_owned()]);
        assert_eq!(known.get("cus_1"), None);

        for i in 0..MOST {
            known.remember(&format!("cus_{i}"), Vec::new());
        }
        // Kept again: no room is made for a customer already there.
        known.remember("cus_0", vec![record.clone()]);
        assert_eq!(known.lock().len(), MOST);
        known.remember("cus_new", Vec::new());
        assert_eq!(known.lock().len(), 1);
        assert_eq!(known.get("cus_new"), Some(Vec::new()));
    }
}
