//! The integration suite: the real application over real HTTP and gRPC, with
//! webhooks signed as Stripe signs them.

mod helpers;
mod stripe;

mod delivery;
mod durability;
mod fixtures;
mod lifecycle;
mod reviews;
mod webhook_signature;
