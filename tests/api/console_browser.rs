//! The admin console in a real browser: Debian's chromium, driven through
//! chromedriver (WebDriver) by fantoccini. Skipped, loudly, when chromium
//! or chromedriver is missing, unless `TOLLGATE_REQUIRE_BROWSER=1`.
//!
//! Screenshots of each page go to `target/screenshots/` (test artefacts);
//! the review page's is also copied to `docs/console-review.png`, which
//! the README shows (see [`update_readme_screenshot`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use crate::console::impossible_transition;
use crate::helpers::{now, spawn_app_on, Backend, ADMIN_TOKEN};
use crate::stripe::{subscription_object, Shape, Sub};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn browser_required() -> bool {
    std::env::var("TOLLGATE_REQUIRE_BROWSER").is_ok_and(|v| v == "1" || v == "true")
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if reqwest::get(format!("{url}/status")).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not answer on {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { _child: child, url }
}

async fn connect(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1100,1700"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a chromium session starts")
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("screenshot");
    let path = screenshots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    path
}

/// Copies the review page's screenshot to `docs/console-review.png` (shown
/// in the README) when there is none yet, or when
/// `TOLLGATE_UPDATE_SCREENSHOTS=1`: every run takes a new one (the times on
/// the page differ), and a test run should not leave the work tree dirty.
fn update_readme_screenshot(shot: &Path) {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let target = docs.join("console-review.png");
    let asked = std::env::var("TOLLGATE_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1");
    if asked || !target.exists() {
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(shot, target).unwrap();
    }
}

/// The text of the first `css` element once it satisfies `ready` (or after
/// 10 s, for the caller's assertion to show). A click that navigates may
/// leave the old page in place for a moment, with an element of the same
/// selector or a stale reference to one: the element is looked up again.
async fn text_when(client: &Client, css: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        let text = found.text().await.unwrap_or_default();
        if ready(&text) || std::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reviews_an_impossible_transition_in_a_real_browser() {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        assert!(
            !browser_required(),
            "TOLLGATE_REQUIRE_BROWSER is set but {missing:?} is missing: apt-get install -y chromium chromium-driver"
        );
        eprintln!(
            "SKIPPED the console browser test: {missing:?} missing (apt-get install -y chromium chromium-driver)"
        );
        return;
    }
    let driver = start_driver().await;
    let client = connect(&driver).await;
    let result = tokio::spawn(flow(client.clone())).await;
    let _ = client.close().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn flow(c: Client) {
    let app = spawn_app_on(Backend::Sqlite).await;
    let review = impossible_transition(&app, "sub_browser", "cus_browser").await;
    // What Stripe says when the admin refreshes: still canceled.
    let sub = Sub::new("sub_browser", "cus_browser", "canceled", now() + 86400);
    app.stripe
        .put_subscription(subscription_object(&sub, Shape::Basil));
    let base = format!("http://{}", app.console_addr.expect("console served"));

    // Log in.
    c.goto(&format!("{base}/admin")).await.unwrap();
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/admin/login"));
    shoot(&c, "01-login").await;
    let form = c
        .form(Locator::Css("form[action='/admin/login']"))
        .await
        .unwrap();
    form.set_by_name("token", ADMIN_TOKEN).await.unwrap();
    form.submit().await.unwrap();
    assert_eq!(text_when(&c, "h1", |t| t == "Overview").await, "Overview");
    shoot(&c, "02-overview").await;

    // The open queue lists the review; open it.
    c.goto(&format!("{base}/admin/reviews")).await.unwrap();
    let link = format!("Review {}", review.id);
    shoot(&c, "03-reviews-open").await;
    c.find(Locator::LinkText(&link))
        .await
        .expect("the review is in the open queue")
        .click()
        .await
        .unwrap();
    let h1 = text_when(&c, "h1", |t| t.contains("impossible_transition")).await;
    assert!(h1.contains("impossible_transition"), "{h1}");

    // Refresh it from Stripe.
    c.find(Locator::Css("form[action$='/refresh'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let said = text_when(&c, "#refresh-outcome", |t| t.starts_with("stripe says")).await;
    assert!(said.starts_with("stripe says canceled"), "{said}");
    let shot = shoot(&c, "04-review").await;
    update_readme_screenshot(&shot);

    // Resolve it with a note.
    let form = c
        .find(Locator::Css("form[action$='/resolve']"))
        .await
        .unwrap();
    form.find(Locator::Css("textarea[name='note']"))
        .await
        .unwrap()
        .send_keys("Stripe says canceled; the revival was a test clock")
        .await
        .unwrap();
    form.find(Locator::Css("button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let state = text_when(&c, "dl dd", |t| t.starts_with("resolved")).await;
    assert!(state.starts_with("resolved"), "{state}");
    let page = c.source().await.unwrap();
    assert!(page.contains("Stripe says canceled; the revival was a test clock"));
    shoot(&c, "05-review-resolved").await;
    let stored = app.store.get_review(review.id).await.unwrap().unwrap();
    assert!(stored.resolved_at_ms.is_some());

    // It has left the open queue.
    c.goto(&format!("{base}/admin/reviews?state=open"))
        .await
        .unwrap();
    assert!(c.find(Locator::LinkText(&link)).await.is_err());
    shoot(&c, "06-reviews-after").await;

    // Look up its event.
    c.goto(&format!("{base}/admin/events")).await.unwrap();
    let event_id = review.event_id.clone().expect("the review names its event");
    let form = c
        .form(Locator::Css("form[action='/admin/events']"))
        .await
        .unwrap();
    form.set_by_name("id", &event_id).await.unwrap();
    form.submit().await.unwrap();
    assert_eq!(
        text_when(&c, "#outcome", |t| t == "ignored").await,
        "ignored"
    );
    let h1 = text_when(&c, "h1", |t| t.contains(event_id.as_str())).await;
    assert!(h1.contains(&event_id), "{h1}");
    shoot(&c, "07-event").await;

    // And its customer.
    c.goto(&format!("{base}/admin/subjects?customer_id=cus_browser"))
        .await
        .unwrap();
    assert!(c.source().await.unwrap().contains("sub_browser"));
    shoot(&c, "08-subject").await;

    // At phone width the review page still reads without sideways scroll.
    c.set_window_size(390, 1500).await.unwrap();
    c.goto(&format!("{base}/admin/reviews/{}", review.id))
        .await
        .unwrap();
    let scroll: serde_json::Value = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    shoot(&c, "09-review-phone").await;
    assert_eq!(
        scroll,
        serde_json::Value::Bool(true),
        "no sideways scroll at 390 px"
    );
}
