//! The integration suite: the real application over real HTTP and gRPC, with
//! webhooks signed as Stripe signs them, and a fake Stripe API on loopback.

mod fake_stripe;
mod helpers;
mod stripe;

mod cli_check;
mod cli_demo;
mod connections;
mod console;
mod console_browser;
mod crash;
mod delivery;
mod durability;
mod endive;
mod examples;
mod faults;
mod features;
mod fixtures;
mod group_commit;
mod lifecycle;
mod limits;
mod livemode;
mod metrics;
mod process;
mod readme;
mod receiver;
mod refresh;
mod repair;
mod replicas;
mod reviews;
mod startup_errors;
mod store_suite;
mod stripe_client;
mod summaries;
mod thin_events;
mod webhook_signature;
