//! Headless Chromium driven over the DevTools protocol, for pages that
//! change after they load (a followed log, a button): open a page, run
//! JavaScript in it, wait for a condition. The browser is started per
//! `Browser` with its own profile directory and ended (by PID) on drop.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The installed Chromium, if any.
pub fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_string)
}

/// Chromium, or None when it is missing and TESTBOT_SKIP_BROWSER is set
/// (a missing browser fails the test otherwise).
pub fn chromium_or_skip() -> Option<String> {
    match chromium() {
        Some(b) => Some(b),
        None if std::env::var_os("TESTBOT_SKIP_BROWSER").is_some() => {
            eprintln!("no chromium and TESTBOT_SKIP_BROWSER is set: skipped");
            None
        }
        None => panic!("chromium is not installed (`apt-get install chromium`, as .ci/run does)"),
    }
}

pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// One tab, attached with its own session.
pub struct Tab<'a> {
    browser: &'a mut Browser,
    session: String,
    target: String,
}

impl Browser {
    pub fn start(binary: &str, profile: &Path) -> Browser {
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium did not open its DevTools port");
        let (ws, _) = tungstenite::connect(&url).expect("connect to chromium");
        Browser {
            child,
            ws,
            next_id: 0,
        }
    }

    /// Sends a command (to a tab's session when given); returns its result.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        match self.try_call(session, method, params) {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e}"),
        }
    }

    /// Sends a command; its result, or the error chromium answered.
    fn try_call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send to chromium");
        loop {
            let m = self.ws.read().expect("read from chromium");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    return Err(e.clone());
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// Opens `url` in a new tab of `width` x `height` CSS pixels.
    pub fn open(&mut self, url: &str, width: u32, height: u32) -> Tab<'_> {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        let session = attached["sessionId"].as_str().unwrap().to_string();
        let mut tab = Tab {
            browser: self,
            session,
            target: target_id,
        };
        tab.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        );
        tab.call("Page.enable", json!({}));
        tab.call("Page.navigate", json!({"url": url}));
        tab.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        );
        tab
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tab is closed when done with: a browser keeps at most six
/// connections to one server, and a live page holds one.
impl Drop for Tab<'_> {
    fn drop(&mut self) {
        let target = self.target.clone();
        self.browser
            .call(None, "Target.closeTarget", json!({"targetId": target}));
    }
}

impl Tab<'_> {
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.browser.call(Some(&session), method, params)
    }

    /// The value of a JavaScript expression in the page.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until the expression is true in the page; false on timeout.
    /// A page that is navigating (a form was sent) has no context to
    /// evaluate in for a moment: that counts as not yet.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let session = self.session.clone();
            let r = match self.browser.try_call(
                Some(&session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            ) {
                Ok(r) => r,
                Err(e) if e.to_string().contains("navigated or closed") => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => panic!("Runtime.evaluate: {e}"),
            };
            if r["result"]["value"] == json!(true) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}
