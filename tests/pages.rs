//! The web pages in a real headless Chromium: the log viewer (colours,
//! line links, follow), filtered lists, a build's failing tests, the
//! cancel button with and without a client token, narrow screens, and
//! what a browser gets for a missing page.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::*;

const SEC: Duration = Duration::from_secs(1);

/// In the page: every element with text of its own whose contrast against
/// the first opaque background behind it is under 4.5:1 (WCAG's formula).
const CONTRAST: &str = r#"(function(){
 function parse(c){var m=c.match(/rgba?\(([^)]+)\)/); if(!m) return null;
   var p=m[1].split(',').map(Number); return {r:p[0],g:p[1],b:p[2],a:p.length>3?p[3]:1};}
 function lum(c){function f(v){v/=255;return v<=0.03928?v/12.92:Math.pow((v+0.055)/1.055,2.4);}
   return 0.2126*f(c.r)+0.7152*f(c.g)+0.0722*f(c.b);}
 function bg(el){while(el){var c=parse(getComputedStyle(el).backgroundColor); if(c&&c.a>0.5) return c; el=el.parentElement;}
   return {r:255,g:255,b:255,a:1};}
 var bad=[];
 document.querySelectorAll('body *').forEach(function(el){
   var r=el.getBoundingClientRect(); if(r.width===0||r.height===0||r.right<0) return;
   var own=[].some.call(el.childNodes,function(n){return n.nodeType===3&&n.textContent.trim();});
   if(!own) return;
   var cs=getComputedStyle(el), fg=parse(cs.color), b=bg(el);
   var l1=lum(fg), l2=lum(b), ratio=(Math.max(l1,l2)+0.05)/(Math.min(l1,l2)+0.05);
   if(ratio<4.5) bad.push(el.tagName+'.'+el.className+' '+ratio.toFixed(2)+' '+cs.color+' "'+el.textContent.trim().slice(0,30)+'"');
 });
 return bad;})()"#;

#[test]
fn the_log_viewer_shows_colours_links_lines_and_follows_a_running_job() {
    let Some(binary) = browser::chromium_or_skip() else {
        return;
    };
    let dir = tempdir();
    let server = Server::start(dir.path());
    std::fs::write(
        dir.path().join("job.sh"),
        r#"printf '\033[1;31mred-bold\033[0m plain \033[38;5;46mgreen256\033[0m\n'
i=2; while [ $i -le 120 ]; do echo "line-$i"; i=$((i+1)); done
sleep 2
i=121; while [ $i -le 400 ]; do echo "more-$i"; i=$((i+1)); sleep 0.01; done
sleep 60
"#,
    )
    .unwrap();
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "viewer",
        &format!(
            "[jobtypes.colours]\ncommand = \"sh {}/job.sh\"\n",
            dir.path().display()
        ),
    );
    wait_online(&server, "viewer");
    let id = server.submit(&["colours"])[0];
    assert!(wait_until(20 * SEC, || server
        .log_of(id)
        .contains("line-120")));
    let mut chrome = browser::Browser::start(&binary, &dir.path().join("profile"));

    // #L50 opens scrolled to line 50, and the colours are spans.
    {
        let mut tab = chrome.open(&format!("{}/jobs/{id}#L50", server.url), 1000, 600);
        assert!(
            tab.wait_for(
                "(function(){var e=document.getElementById('L50'); if(!e) return false; \
                 var r=e.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight;})()",
                10 * SEC
            ),
            "line 50 is not in view: {}",
            tab.eval("JSON.stringify([scrollY, (document.getElementById('L50')||{getBoundingClientRect:function(){return {}}}).getBoundingClientRect()])")
        );
        assert_eq!(
            tab.eval("document.getElementById('L50').textContent"),
            serde_json::json!("line-50\n")
        );
        assert_eq!(
            tab.eval("document.querySelector('#L1 span.b.f1').textContent"),
            serde_json::json!("red-bold")
        );
        assert_eq!(
            tab.eval("getComputedStyle(document.querySelector('#L1 span.b.f1')).fontWeight"),
            serde_json::json!("700")
        );
        assert_eq!(
            tab.eval("document.querySelector('#L1 span[style]').style.color"),
            serde_json::json!("rgb(0, 255, 0)")
        );
        let text = tab.eval("document.getElementById('log').textContent");
        let text = text.as_str().unwrap();
        assert!(
            !text.contains('\u{1b}') && !text.contains("[1;31m"),
            "{text}"
        );
        // The raw log is a link away.
        assert_eq!(
            tab.eval("!!document.querySelector('a[href^=\"/api/v1/jobs/\"][href*=\"/log\"]')"),
            serde_json::json!(true)
        );
        // Wrapping is a toggle.
        tab.eval("document.getElementById('wrap').click()");
        assert_eq!(
            tab.eval("document.getElementById('log').classList.contains('wrap')"),
            serde_json::json!(true)
        );
        tab.eval("document.getElementById('wrap').click()");
    }

    // Follow: the last line stays in view while the job prints.
    let mut tab = chrome.open(&format!("{}/jobs/{id}", server.url), 1000, 600);
    let last_in_view = "(function(){var l=document.getElementById('log').lastElementChild; \
        var r=l.getBoundingClientRect(); return r.bottom <= innerHeight + 2 && r.top >= 0;})()";
    assert!(
        tab.wait_for(
            "document.getElementById('log').textContent.includes('more-200')",
            20 * SEC
        ),
        "{}",
        tab.eval("document.getElementById('log').textContent.slice(-300)")
    );
    assert_eq!(tab.eval(last_in_view), serde_json::json!(true));
    assert!(tab.wait_for(
        "document.getElementById('log').textContent.includes('more-400')",
        20 * SEC
    ));
    assert!(tab.wait_for(last_in_view, 5 * SEC));
    // Every line once, numbered in order.
    assert_eq!(
        tab.eval("document.getElementById('L400').textContent"),
        serde_json::json!("more-400\n")
    );
    assert_eq!(
        tab.eval("document.querySelectorAll('#log > div').length"),
        serde_json::json!(400)
    );
    server.cli(&["cancel", &id.to_string()]);
    server.wait_final(id, 20 * SEC);
    // The ended job's page updates in place: no reload.
    tab.eval("window.__same_page = 1");
    assert!(
        tab.wait_for(
            "document.body.dataset.state === 'canceled' && window.__same_page === 1",
            20 * SEC
        ),
        "{}",
        tab.eval("document.body.dataset.state")
    );
}

#[test]
fn lists_filter_and_a_builds_failing_test_is_listed_once_with_its_jobs() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    std::fs::write(
        dir.path().join("suite.sh"),
        r#"{
  echo '<testsuite name="s">'
  echo '<testcase classname="s" name="test_ok"/>'
  echo "<testcase classname=\"s\" name=\"test_broken\"><failure message=\"boom in $P\">trace line 1
trace line 2</failure></testcase>"
  echo '</testsuite>'
} > "$TESTBOT_JUNIT_DIR/r.xml"
exit 1
"#,
    )
    .unwrap();
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "lister",
        &format!(
            "slots = 2\n[jobtypes.suite]\ncommand = \"P=$TESTBOT_PARAM_PART sh {}/suite.sh\"\n[jobtypes.ok]\ncommand = \"true\"\n",
            dir.path().display()
        ),
    );
    wait_online(&server, "lister");
    let out = server.cli(&[
        "submit",
        "--build",
        "nightly",
        "--meta",
        "branch=main",
        "suite",
        "suite",
        "ok",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for _ in 0..3 {
        let id = server.submit(&["ok"])[0];
        server.wait_final(id, 20 * SEC);
    }
    let failed: serde_json::Value = server.get("/api/v1/jobs?state=failed");
    let failed: Vec<i64> = failed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");

    // /jobs?state=failed shows the failed jobs and nothing else.
    let page = http_get(&format!("{}/jobs?state=failed", server.url));
    assert_eq!(page.status, 200);
    let rows = page.body.matches("<tr><td><a href=\"/jobs/").count();
    assert_eq!(rows, 2, "{}", page.body);
    for id in &failed {
        assert!(
            page.body.contains(&format!("href=\"/jobs/{id}\"")),
            "{}",
            page.body
        );
    }
    assert!(!page.body.contains("class=\"st passed\""), "{}", page.body);
    // Filters by jobtype, and paging.
    let oks = http_get(&format!("{}/jobs?jobtype=ok&limit=2", server.url)).body;
    assert_eq!(oks.matches("<tr><td><a href=\"/jobs/").count(), 2, "{oks}");
    assert!(oks.contains("rel=\"next\""), "{oks}");
    let bad = http_get(&format!("{}/jobs?state=sideways", server.url));
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("sideways"), "{}", bad.body);

    // The build page: one entry for the failing test, naming both jobs.
    let build = http_get(&format!("{}/builds/1", server.url)).body;
    assert_eq!(
        build
            .matches("<span class=\"failed\">s.test_broken</span>")
            .count()
            + build
                .matches("<span class=\"failed\">test_broken</span>")
                .count(),
        1,
        "{build}"
    );
    for id in &failed {
        assert!(build.contains(&format!("href=\"/jobs/{id}\"")), "{build}");
    }
    assert!(build.contains("branch=main"), "{build}");
    assert!(build.contains("class=\"bar\""), "{build}");
    // Failed jobs come first.
    let needle = "<tbody><tr><td><a href=\"/jobs/";
    let first_row = build.find(needle).unwrap() + needle.len();
    let first_id: i64 = build[first_row..]
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(failed.contains(&first_id), "{first_id} {build}");
    // The builds list filters by state.
    let passed = http_get(&format!("{}/builds?state=passed", server.url)).body;
    assert!(!passed.contains("href=\"/builds/1\""), "{passed}");
    let failed_builds = http_get(&format!("{}/builds?state=failed&name=NIGHT", server.url)).body;
    assert!(
        failed_builds.contains("href=\"/builds/1\""),
        "{failed_builds}"
    );
    // The job page: the failure's message, its whole text folded under it.
    let job = http_get(&format!("{}/jobs/{}", server.url, failed[0])).body;
    assert!(job.contains("<details class=\"failure\">"), "{job}");
    assert!(job.contains("<pre>boom in"), "{job}");
}

#[test]
fn the_cancel_button_cancels_and_needs_a_client_token_where_there_are_tokens() {
    let Some(binary) = browser::chromium_or_skip() else {
        return;
    };
    let dir = tempdir();
    let wt = write_tokens(dir.path(), "worker.tokens", &["w-page-secret"]);
    let ct = write_tokens(dir.path(), "client.tokens", &["c-page-secret"]);
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &["--worker-tokens", &wt, "--client-tokens", &ct],
    );
    let token_file = write_tokens(dir.path(), "my.token", &["w-page-secret"]);
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "clicker",
        &format!("token_file = \"{token_file}\"\n[jobtypes.long]\ncommand = \"echo started; sleep 120\"\n"),
    );
    wait_online(&server, "clicker");
    let submit = |what: &str| -> i64 {
        let out = std::process::Command::new(BIN)
            .args(["submit", what, "--json"])
            .env("TESTBOT_SERVER", &server.url)
            .env("TESTBOT_TOKEN", "c-page-secret")
            .output()
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
        v.as_array().map(|a| a[0].clone()).unwrap_or(v)["id"]
            .as_i64()
            .unwrap()
    };
    let id = submit("long");
    server.wait_state(id, "running", 20 * SEC);
    let mut chrome = browser::Browser::start(&binary, &dir.path().join("profile"));
    let mut tab = chrome.open(&format!("{}/jobs/{id}", server.url), 1000, 700);
    let click_cancel = "document.querySelector('form[action$=\"/cancel\"] button').click()";
    tab.eval(click_cancel);
    assert!(
        tab.wait_for(
            "document.body.innerText.includes('needs a client token')",
            10 * SEC
        ),
        "{}",
        tab.eval("document.body.innerText")
    );
    assert_eq!(server.job(id)["state"], "running");
    assert_eq!(server.job(id)["cancel_requested"], false);
    // A forged form without the CSRF token is refused too.
    let forged = http(
        "POST",
        &format!("{}/jobs/{id}/cancel", server.url),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"csrf="),
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    // A wrong token does not sign in; the right one does, once.
    tab.eval("document.querySelector('input[name=token]').value='nope'; document.querySelector('form[action=\"/login\"] button').click()");
    assert!(tab.wait_for(
        "document.body.innerText.includes('not one of this server')",
        10 * SEC
    ));
    tab.eval("document.querySelector('input[name=token]').value='c-page-secret'; document.querySelector('form[action=\"/login\"] button').click()");
    assert!(
        tab.wait_for(&format!("location.pathname === '/jobs/{id}'"), 10 * SEC),
        "{}",
        tab.eval("location.href")
    );
    // The cookie is out of the page's reach.
    assert_eq!(
        tab.eval("document.cookie.includes('c-page-secret')"),
        serde_json::json!(false)
    );
    assert!(tab.wait_for("document.readyState === 'complete' && !!document.querySelector('form[action$=\"/cancel\"] button')", 10 * SEC));
    tab.eval(click_cancel);
    let job = server.wait_final(id, 20 * SEC);
    assert_eq!(job["state"], "canceled", "{job}");
}

#[test]
fn pages_fit_a_400_pixel_screen_and_browsers_get_html_errors() {
    let Some(binary) = browser::chromium_or_skip() else {
        return;
    };
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "a-worker-with-a-rather-long-name-for-a-narrow-screen",
        "[jobtypes.wide]\ncommand = \"echo a-very-long-line-without-any-spaces-at-all-$(seq -s - 1 200)\"\n",
    );
    wait_online(
        &server,
        "a-worker-with-a-rather-long-name-for-a-narrow-screen",
    );
    let out = server.cli(&[
        "submit",
        "--build",
        "a-build-name-that-goes-on-and-on-and-on",
        "--meta",
        "revision=0123456789abcdef0123456789abcdef01234567",
        "wide",
        "-P",
        "suite=tests/some/deeply/nested/directory/with/a/long/path/test_everything.py",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut chrome = browser::Browser::start(&binary, &dir.path().join("profile"));
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for (name, path) in [
        ("home", "/"),
        ("job", "/jobs/1"),
        ("build", "/builds/1"),
        (
            "worker",
            "/workers/a-worker-with-a-rather-long-name-for-a-narrow-screen",
        ),
        ("jobs", "/jobs"),
    ] {
        let mut tab = chrome.open(&format!("{}{path}", server.url), 400, 800);
        let widths = tab.eval("[document.documentElement.scrollWidth, innerWidth]");
        assert!(
            widths[0].as_i64() <= widths[1].as_i64(),
            "{path} scrolls sideways at 400 px: {widths}"
        );
        let shot = tab.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png"}),
        );
        if let Some(data) = shot["data"].as_str() {
            let _ = std::fs::write(shots.join(format!("page-{name}-400.b64")), data);
        }
        assert_eq!(
            tab.eval("document.documentElement.lang"),
            serde_json::json!("en")
        );
        assert_eq!(
            tab.eval("!!document.querySelector('meta[name=viewport]') && !!document.querySelector('main')"),
            serde_json::json!(true)
        );
    }
    // Every text keeps a contrast of 4.5:1 against what is behind it, in
    // the light theme and the dark one.
    for dark in [false, true] {
        for path in [
            "/",
            "/jobs/1",
            "/builds/1",
            "/workers",
            "/jobs?state=passed",
        ] {
            let mut tab = chrome.open(&format!("{}{path}", server.url), 1000, 800);
            if dark {
                tab.call(
                    "Emulation.setEmulatedMedia",
                    serde_json::json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
                );
                let bg = tab.eval("getComputedStyle(document.body).backgroundColor");
                assert_eq!(bg, serde_json::json!("rgb(13, 17, 23)"), "{path}: not dark");
            }
            let low = tab.eval(CONTRAST);
            assert_eq!(
                low,
                serde_json::json!([]),
                "{path} (dark: {dark}): low contrast"
            );
            // The check itself sees low contrast where there is some.
            tab.eval("var p=document.createElement('p'); p.style.color='#777'; p.style.background='#888'; p.textContent='faint'; document.querySelector('main').appendChild(p)");
            assert_eq!(tab.eval(CONTRAST).as_array().map(|a| a.len()), Some(1));
        }
    }
    // A browser gets a page for a missing one; an API client JSON.
    let mut tab = chrome.open(&format!("{}/jobs/424242", server.url), 1000, 700);
    assert_eq!(
        tab.eval("document.contentType + ' ' + document.querySelector('h1').textContent"),
        serde_json::json!("text/html 404 Not found")
    );
    let missing = http(
        "GET",
        &format!("{}/no/such/page", server.url),
        &[("Accept", "text/html,application/xhtml+xml")],
        None,
    );
    assert_eq!(missing.status, 404);
    assert!(
        missing.body.starts_with("<!DOCTYPE html>"),
        "{}",
        missing.body
    );
    assert!(missing.body.contains("/no/such/page"), "{}", missing.body);
    let api = http_get(&format!("{}/api/v1/jobs/424242", server.url));
    assert_eq!(api.status, 404);
    assert!(api.json()["error"].is_string(), "{}", api.body);
}

#[test]
fn pages_are_compressed_when_the_browser_asks() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "zipper",
        "[jobtypes.many]\ncommand = \"i=0; while [ $i -lt 3000 ]; do echo \\\"output line $i\\\"; i=$((i+1)); done\"\n",
    );
    wait_online(&server, "zipper");
    let out = server.cli(&["submit", "many", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let addr = server.url.trim_start_matches("http://");
    let raw = |path: &str, gzip: bool| -> (String, usize) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(20 * SEC)).unwrap();
        let enc = if gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\n{enc}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&buf[..split]).to_lowercase(),
            buf.len() - split - 4,
        )
    };
    let (head, zipped) = raw("/jobs/1", true);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let (head, plain) = raw("/jobs/1", false);
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(zipped * 3 < plain, "gzip {zipped} vs plain {plain}");
    let (head, _) = raw("/api/v1/jobs/1/log", true);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    // A long log shows its tail first, with a link to all of it.
    let page = http_get(&format!("{}/jobs/1", server.url)).body;
    assert!(
        page.contains("Show all 3000 lines"),
        "{}",
        &page[..page.len().min(3000)]
    );
    assert!(page.contains("id=\"L3000\"") && !page.contains("id=\"L2\""));
}

#[test]
fn a_private_servers_pages_ask_for_a_token_once_and_keep_it_in_a_strict_cookie() {
    let dir = tempdir();
    let ct = write_tokens(dir.path(), "client.tokens", &["c-private-secret"]);
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &["--client-tokens", &ct, "--private"],
    );
    let agent = no_redirects();
    let html = [("Accept", "text/html")];
    let go = |method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>| {
        send(
            &agent,
            method,
            &format!("{}{path}", server.url),
            headers,
            body,
        )
        .unwrap()
    };
    // A browser is sent to sign in; an API client gets JSON.
    let home = go("GET", "/jobs?state=failed", &html, None);
    assert_eq!(home.status, 303, "{}", home.body);
    assert_eq!(
        home.header("location"),
        Some("/login?next=%2Fjobs%3Fstate%3Dfailed")
    );
    let api = go("GET", "/api/v1/jobs", &[], None);
    assert_eq!(api.status, 401);
    assert!(api.json()["error"].is_string());
    // The sign-in page sets the CSRF cookie its form repeats.
    let login = go("GET", "/login?next=/jobs", &html, None);
    assert_eq!(login.status, 200);
    let csrf_cookie = login.header("set-cookie").unwrap().to_string();
    assert!(csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"));
    let csrf = cookie_value(&csrf_cookie);
    assert!(
        login.body.contains(&format!("value=\"{csrf}\"")),
        "{}",
        login.body
    );
    let cookie = format!("testbot_csrf={csrf}");
    let form = [
        ("Accept", "text/html"),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Cookie", cookie.as_str()),
    ];
    // Without the CSRF token the sign-in is refused; with it, a wrong token is.
    let r = go(
        "POST",
        "/login",
        &form,
        Some(b"token=c-private-secret&next=%2Fjobs"),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let body = format!("csrf={csrf}&token=wrong&next=%2Fjobs");
    let r = go("POST", "/login", &form, Some(body.as_bytes()));
    assert_eq!(r.status, 401);
    // Never to another site: browsers drop tabs and newlines from a URL.
    for next in [
        "%2F%09%2Fevil.example",
        "%2F%0A%2Fevil.example",
        "%2F%0D%0ASet-Cookie%3A+x%3D1",
    ] {
        let body = format!("csrf={csrf}&token=c-private-secret&next={next}");
        let r = go("POST", "/login", &form, Some(body.as_bytes()));
        assert_eq!(r.status, 303, "{next}: {}", r.body);
        assert_eq!(r.header("location"), Some("/"), "{next}");
    }
    let body = format!("csrf={csrf}&token=c-private-secret&next=%2F%2Fevil.example");
    let r = go("POST", "/login", &form, Some(body.as_bytes()));
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/"), "never to another site");
    let token_cookie = r.header("set-cookie").unwrap().to_string();
    assert!(
        token_cookie.starts_with("testbot_token=c-private-secret;")
            && token_cookie.contains("HttpOnly")
            && token_cookie.contains("SameSite=Strict"),
        "{token_cookie}"
    );
    let both = format!("testbot_csrf={csrf}; testbot_token=c-private-secret");
    let page = go(
        "GET",
        "/jobs?state=failed",
        &[("Accept", "text/html"), ("Cookie", &both)],
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    // The cookie reads the API but changes nothing there.
    let read = go("GET", "/api/v1/jobs", &[("Cookie", &both)], None);
    assert_eq!(read.status, 200);
    let write = go(
        "POST",
        "/api/v1/jobs",
        &[("Cookie", &both), ("Content-Type", "application/json")],
        Some(br#"{"jobtype": "unit"}"#),
    );
    assert_eq!(write.status, 401, "{}", write.body);
}

#[test]
fn the_home_page_updates_in_place_as_jobs_come_and_end() {
    let Some(binary) = browser::chromium_or_skip() else {
        return;
    };
    let dir = tempdir();
    let server = Server::start(dir.path());
    let mut chrome = browser::Browser::start(&binary, &dir.path().join("profile"));
    let mut tab = chrome.open(&format!("{}/", server.url), 1000, 800);
    // No worker yet: the page says how to start one.
    assert_eq!(
        tab.eval("document.body.innerText.includes('testbot worker --config worker.toml')"),
        serde_json::json!(true)
    );
    tab.eval("window.__same_page = 1");
    let id = server.submit(&["sse"])[0];
    assert!(
        tab.wait_for(
            &format!("!!document.querySelector('#waiting a[href=\\'/jobs/{id}\\']') && window.__same_page === 1"),
            10 * SEC
        ),
        "{}",
        tab.eval("document.getElementById('waiting').innerText")
    );
    // Why it waits, in words.
    assert_eq!(
        tab.eval("document.getElementById('waiting').innerText.includes('no registered worker has the jobtype')"),
        serde_json::json!(true)
    );
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "sser",
        "[jobtypes.sse]\ncommand = \"true\"\n",
    );
    server.wait_final(id, 20 * SEC);
    assert!(
        tab.wait_for(
            &format!("!!document.querySelector('#ended a[href=\\'/jobs/{id}\\']') && window.__same_page === 1"),
            10 * SEC
        ),
        "{}",
        tab.eval("document.body.innerText")
    );
    // The page's favicon and the state counts follow too.
    assert_eq!(
        tab.eval(
            "document.querySelector('#counts a[href=\\'/jobs?state=passed\\']').innerText.trim()"
        ),
        serde_json::json!("✓ passed 1")
    );
    let icon = http_get(&format!("{}/favicon.svg?state=failed", server.url));
    assert_eq!(icon.header("content-type"), Some("image/svg+xml"));
    assert!(icon.body.contains("#c62828"), "{}", icon.body);
    let job = http_get(&format!("{}/jobs/{id}", server.url)).body;
    assert!(job.contains("href=\"/favicon.svg?state=passed\""), "{job}");
}

#[test]
fn drain_and_rerun_buttons_work_as_plain_forms() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "former",
        "[jobtypes.flip]\ncommand = \"false\"\n[jobtypes.flop]\ncommand = \"true\"\n",
    );
    wait_online(&server, "former");
    let agent = no_redirects();
    let page = send(
        &agent,
        "GET",
        &format!("{}/workers/former", server.url),
        &[("Accept", "text/html")],
        None,
    )
    .unwrap();
    let set = page.header("set-cookie").unwrap().to_string();
    let csrf = cookie_value(&set);
    assert!(
        page.body.contains("action=\"/workers/former/drain\""),
        "{}",
        page.body
    );
    let cookie = format!("testbot_csrf={csrf}");
    let post = |path: &str, csrf: &str| {
        let body = format!("csrf={csrf}");
        send(
            &agent,
            "POST",
            &format!("{}{path}", server.url),
            &[
                ("Accept", "text/html"),
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", cookie.as_str()),
            ],
            Some(body.as_bytes()),
        )
        .unwrap()
    };
    // A form whose token is not the browser's changes nothing.
    assert_eq!(
        post("/workers/former/drain", "0123456789abcdef0123456789abcdef").status,
        403
    );
    assert_eq!(server.get("/api/v1/workers/former")["drained"], false);
    let r = post("/workers/former/drain", &csrf);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/workers/former"));
    let w = server.get("/api/v1/workers/former");
    assert_eq!(w["drained"], true, "{w}");
    assert!(w["drained_at"].is_string(), "{w}");
    let shown = http_get(&format!("{}/workers/former", server.url)).body;
    assert!(shown.contains("takes no new ones, since"), "{shown}");
    assert!(
        shown.contains("action=\"/workers/former/undrain\""),
        "{shown}"
    );
    assert_eq!(post("/workers/former/undrain", &csrf).status, 303);
    let w = server.get("/api/v1/workers/former");
    assert_eq!(w["drained"], false, "{w}");
    assert!(w["drained_at"].is_null(), "{w}");
    // Run again: a failed job runs as a new job; a build's failed jobs as
    // a new build that says which it reruns.
    let out = server.cli(&["submit", "--build", "flips", "flip", "flop", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed: serde_json::Value = server.get("/api/v1/jobs?state=failed&build=1");
    let failed_id = failed[0]["id"].as_i64().unwrap();
    let r = post(&format!("/jobs/{failed_id}/rerun"), &csrf);
    assert_eq!(r.status, 303, "{}", r.body);
    let again: i64 = r
        .header("location")
        .unwrap()
        .trim_start_matches("/jobs/")
        .parse()
        .unwrap();
    assert!(again > failed_id);
    let j = server.wait_final(again, 20 * SEC);
    assert_eq!(j["jobtype"], "flip");
    assert!(j["build"].is_null(), "{j}");
    let r = post("/builds/1/rerun", &csrf);
    assert_eq!(r.status, 303, "{}", r.body);
    let new_build: i64 = r
        .header("location")
        .unwrap()
        .trim_start_matches("/builds/")
        .parse()
        .unwrap();
    let b = server.get(&format!("/api/v1/builds/{new_build}"));
    assert_eq!(
        b["jobs"].as_array().unwrap().len(),
        1,
        "only the failed job: {b}"
    );
    assert_eq!(b["meta"]["rerun_of"], 1, "{b}");
    assert_eq!(b["name"], "flips");
    // A job no worker fits: its page says why, worker by worker, with the
    // requirement written as it was typed.
    let waiting = server.submit(&["flop", "-p", "python.version>=3.13"])[0];
    let page = http_get(&format!("{}/jobs/{waiting}", server.url)).body;
    assert!(page.contains("Why it is waiting"), "{page}");
    assert!(page.contains("python.version&gt;=3.13"), "{page}");
    assert!(!page.contains("=&gt;="), "{page}");
    assert!(
        page.contains("<td><a href=\"/workers/former\">former</a></td>")
            && page.contains("has no python.version, the job needs python.version&gt;=3.13"),
        "{page}"
    );
    server.cli(&["cancel", &waiting.to_string()]);
    // No such job: the browser is told so, in a page.
    let missing = post("/jobs/999999/rerun", &csrf);
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("999999"), "{}", missing.body);
}

#[test]
fn a_big_builds_pages_skip_nothing_when_jobs_change_between_them() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let jobs: Vec<serde_json::Value> = (0..450)
        .map(|i| serde_json::json!({"jobtype": "nobody", "params": {"n": i.to_string()}}))
        .collect();
    let body = serde_json::json!({"name": "big", "jobs": jobs}).to_string();
    let r = http(
        "POST",
        &format!("{}/api/v1/builds", server.url),
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let build = r.json()["id"].as_i64().unwrap();
    let ids_on = |page: &str| -> Vec<i64> {
        page.split("<tr><td><a href=\"/jobs/")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().parse().unwrap())
            .collect()
    };
    let next_of = |page: &str| -> Option<String> {
        let i = page.find("rel=\"next\"")?;
        let href = page[..i].rfind("href=\"")?;
        Some(page[href + 6..i].split('"').next()?.replace("&amp;", "&"))
    };
    let first = http_get(&format!("{}/builds/{build}?state=queued", server.url)).body;
    let seen = ids_on(&first);
    assert_eq!(seen.len(), 200, "{first}");
    // Jobs already seen leave the list before the next page is read.
    for id in &seen[..30] {
        server.cli(&["cancel", &id.to_string()]);
    }
    let mut all = seen.clone();
    let mut next = next_of(&first);
    while let Some(n) = next {
        let page = http_get(&format!("{}{n}", server.url)).body;
        all.extend(ids_on(&page));
        next = next_of(&page);
    }
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "a job shown twice");
    assert_eq!(all.len(), 450, "jobs skipped: {}", 450 - all.len());
    // A missing attempt is a 404 page.
    let missing = http(
        "GET",
        &format!("{}/jobs/{}?attempt=7", server.url, seen[0]),
        &[("Accept", "text/html")],
        None,
    );
    assert_eq!(missing.status, 404);
    assert!(
        missing.body.contains("has no attempt 7"),
        "{}",
        missing.body
    );
    // A form that cannot be read is answered with a page too.
    let garbled = http(
        "POST",
        &format!("{}/jobs/{}/cancel", server.url, seen[0]),
        &[("Accept", "text/html"), ("Content-Type", "text/plain")],
        Some(b"csrf=x"),
    );
    assert_eq!(garbled.status, 415);
    assert_eq!(
        garbled.header("content-type"),
        Some("text/html; charset=utf-8")
    );
}

#[test]
fn a_queued_jobs_place_and_a_quarantines_end_read_as_they_are() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    // Before any worker: a config for this very server.
    let home = http_get(&format!("{}/", server.url)).body;
    let addr = server.url.trim_start_matches("http://");
    assert!(
        home.contains(&format!("server = &quot;http://{addr}&quot;")),
        "{home}"
    );
    let ids = server.submit(&["nobody-has-it", "nobody-has-it"]);
    for (place, id) in ids.iter().enumerate() {
        let page = http_get(&format!("{}/jobs/{id}", server.url)).body;
        assert!(
            page.contains(&format!("Place in the queue: {}<", place + 1)),
            "#{id}: {page}"
        );
    }
    // Three jobs whose command cannot start quarantine the worker: its page
    // says after how many, and when it ends (to come, not "0s ago").
    let _w = Worker::start(
        dir.path(),
        &server.url,
        "broken",
        "[jobtypes.broken]\ncommand = \"/nonexistent/command\"\n",
    );
    wait_online(&server, "broken");
    server.submit(&["broken", "broken", "broken", "broken"]);
    assert!(wait_until(30 * SEC, || {
        server.get("/api/v1/workers/broken")["status"] == "quarantined"
    }));
    let page = http_get(&format!("{}/workers/broken", server.url)).body;
    assert!(
        page.contains("after 3 infrastructure failures in a row, until"),
        "{page}"
    );
    assert!(page.contains(">in "), "{page}");
}
