//! A real headless Chromium for the console's tests, from Debian's
//! packages (`chromium`, `chromium-driver`, installed by `infra/setup.sh`),
//! driven over WebDriver by ChromeDriver on loopback. Nothing downloads a
//! browser. A machine without them fails the test with the command that
//! installs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Where Debian puts them; `JITVM_CHROMIUM` and `JITVM_CHROMEDRIVER`
/// override.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long one wait for the page may take before the test fails.
pub const PAGE_WAIT: Duration = Duration::from_secs(30);

/// One browser session and the ChromeDriver behind it (killed on drop).
pub struct Browser {
    pub client: Client,
    driver: Child,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn binary(variable: &str, default: &str) -> String {
    let path = std::env::var(variable).unwrap_or_else(|_| default.to_owned());
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: the console's browser test needs Debian's chromium and chromium-driver; run `bash infra/setup.sh` (it runs `apt-get install chromium chromium-driver`)"
    );
    path
}

/// The browser's console log, as ChromeDriver keeps it (`goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a headless
    /// Chromium session through it. Screenshots go to `shots`.
    pub async fn start(shots: PathBuf) -> Browser {
        let chromium = binary("JITVM_CHROMIUM", CHROMIUM);
        let chromedriver = binary("JITVM_CHROMEDRIVER", CHROMEDRIVER);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&chromedriver)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{chromedriver} did not start: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        wait_until_ready(&base).await;
        let mut capabilities = Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,860",
                         "--no-first-run", "--disable-extensions",
                         "--disable-background-networking", "--disable-sync",
                         "--disable-component-update", "--disable-default-apps"],
            }),
        );
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&base)
            .await
            .expect("ChromeDriver opens a Chromium session");
        std::fs::create_dir_all(&shots).expect("the screenshot directory");
        Browser {
            client,
            driver,
            shots,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    /// The element `css`, once it is in the page.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Replaces the value of the field `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    /// The visible text of `css` (empty when it is not there).
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the text of `css` contains `needle`; returns the text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        self.until(&format!("{css} to say {needle:?}"), || async {
            let text = self.text(css).await;
            text.contains(needle).then_some(text)
        })
        .await
    }

    /// Polls `check` until it gives a value, failing the test with `what`
    /// and the page's notice after [`PAGE_WAIT`].
    async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            if let Some(found) = check().await {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {PAGE_WAIT:?} for {what} (notice: {:?})",
                self.text("#notice").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether `css` is in the page and shown.
    pub async fn shown(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Waits until `css` is in the page and shown; returns it.
    pub async fn wait_shown(&self, css: &str) -> fantoccini::elements::Element {
        self.until(&format!("{css} to be shown"), || async {
            let element = self.find(css).await;
            element
                .is_displayed()
                .await
                .unwrap_or(false)
                .then_some(element)
        })
        .await
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn run(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Saves a screenshot of the window as `<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Everything the page logged at error level since the last call:
    /// script errors, failed loads and Content-Security-Policy violations.
    pub async fn errors(&self) -> Vec<String> {
        let log = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("ChromeDriver gives the browser log");
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

async fn wait_until_ready(base: &str) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("a client");
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    loop {
        if let Ok(response) = http.get(format!("{base}/status")).send().await
            && let Ok(status) = response.json::<Value>().await
            && status["value"]["ready"] == true
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ChromeDriver did not answer at {base} within {PAGE_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
