//! Every entry into the studio checks a job's parameters the same way: the studio's form (the
//! `submit_job` server function, with and without JavaScript), the old REST API, and re-runs
//! (REST JSON and the `rerun_job` server function) refuse the same out-of-range values with the
//! same refusal kind and field. And the studio page's defaults and bounds are the config's.

mod common;

use std::time::{Duration, Instant};

use app::settings::{Bound, GenerationSettings};
use common::*;
use reqwest::header;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

fn inputs(image_name: &str) -> Form {
    Form::new()
        .part(
            "image_file",
            Part::bytes(std::fs::read(fixture(PORTRAIT)).unwrap())
                .file_name(image_name.to_string()),
        )
        .part(
            "audio_file",
            Part::bytes(short_speech(0.5)).file_name("speech.wav"),
        )
}

/// The `<input>` elements of a page: (name, type, value).
fn page_inputs(html: &str) -> Vec<(String, String, String)> {
    let attr = |tag: &str, key: &str| {
        let pattern = format!(" {key}=\"");
        tag.find(&pattern).map(|at| {
            let rest = &tag[at + pattern.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
    };
    html.split("<input")
        .skip(1)
        .map(|rest| &rest[..rest.find('>').unwrap()])
        .filter_map(|tag| {
            Some((
                attr(tag, "name")?,
                attr(tag, "type").unwrap_or_default(),
                attr(tag, "value").unwrap_or_default(),
            ))
        })
        .collect()
}

async fn page_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

async fn wait_final(base: &str, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let job: Value = reqwest::get(format!("{base}/api/jobs/{id}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if matches!(
            job["state"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return job;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The studio page is built from the config (the inference yaml's defaults, `[bounds]`), and
/// its untouched controls, posted as a browser without JavaScript posts them, give a job with
/// the profile's step count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_studio_form_carries_the_configs_defaults_and_bounds() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.data_dir = scratch.path().join("data");
    config.bounds.steps = Bound::new(1, 77);
    config.bounds.cfg_scale = Bound::new(1.0, 9.5);
    let settings: GenerationSettings = config.generation_settings().unwrap();
    let yaml = model::config::InferenceConfig::from_yaml_file(&config.inference).unwrap();
    assert_eq!(settings.defaults.steps, yaml.inference_steps);
    let s = serve(config).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let html = page_text(&http, &format!("{}/", s.base)).await;
    let fields = page_inputs(&html);
    let value = |name: &str| {
        fields
            .iter()
            .find(|(n, t, _)| n == name && t != "hidden")
            .map(|(_, _, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in {html}"))
    };
    assert_eq!(value("steps"), yaml.inference_steps.to_string());
    assert_eq!(value("cfg_scale"), yaml.cfg_scale.to_string());
    assert!(html.contains(r#"name="steps" min="1" max="77""#), "{html}");
    assert!(
        html.contains(r#"name="cfg_scale" min="1" max="9.5""#),
        "{html}"
    );
    // The snapshot the browser hydrates from carries the same settings.
    let embedded = html
        .split(r#"id="settings-initial">"#)
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .unwrap();
    let embedded: GenerationSettings = serde_json::from_str(embedded).unwrap();
    assert_eq!(embedded, settings);

    // Post the untouched controls (and the files) as the form would, without JavaScript.
    let mut form = inputs("astronaut.png");
    for (name, kind, value) in &fields {
        if kind != "file" && kind != "checkbox" {
            form = form.text(name.clone(), value.clone());
        }
    }
    let resp = http
        .post(format!("{}/api/fn/submit", s.base))
        .header(header::ACCEPT, "text/html")
        .header(header::REFERER, format!("{}/", s.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "a plain form lands on the job's page");
    let location = resp.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    let id = location
        .strip_prefix("/jobs/")
        .expect(&location)
        .to_string();
    let job = wait_final(&s.base, &id).await;
    assert_eq!(job["params"]["steps"], yaml.inference_steps);
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["progress"]["steps"], yaml.inference_steps);

    // The job page follows the job by reloading itself without JavaScript (only while it runs).
    let page = page_text(&http, &format!("{}{location}", s.base)).await;
    assert!(
        !page.contains(r#"http-equiv="refresh""#),
        "finished: no refresh"
    );

    // A refused plain form goes back to the page with the refusal in the query.
    let resp = http
        .post(format!("{}/api/fn/submit", s.base))
        .header(header::ACCEPT, "text/html")
        .header(header::REFERER, format!("{}/", s.base))
        .multipart(inputs("astronaut.png").text("steps", "78"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let back = resp.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(back.contains("__err="), "{back}");
    let page = page_text(&http, &back).await;
    assert!(
        page.contains(r#"data-field="steps""#) && page.contains("from 1 to 77"),
        "the message beside its field: {page}"
    );
}

/// One table, four entries: each out-of-range value gets 422 `bad_parameter` on its field
/// from the form's server function, the old REST API, a REST re-run and the re-run server
/// function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_refuses_the_same_values_the_same_way() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.data_dir = scratch.path().join("data");
    let bounds = config.bounds;
    let s = serve(config).await;
    let http = reqwest::Client::new();

    // A job to re-run.
    let resp = http
        .post(format!("{}/api/v1/inference/hallo2", s.base))
        .multipart(inputs("a.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();

    let table: Vec<(&str, String, Value)> = vec![
        (
            "steps",
            (bounds.steps.max + 1).to_string(),
            serde_json::json!(bounds.steps.max + 1),
        ),
        (
            "cfg_scale",
            (bounds.cfg_scale.max + 1.0).to_string(),
            serde_json::json!(bounds.cfg_scale.max + 1.0),
        ),
        (
            "lip_weight",
            (bounds.lip_weight.min - 0.5).to_string(),
            serde_json::json!(bounds.lip_weight.min - 0.5),
        ),
        (
            "face_expand_ratio",
            (bounds.face_expand_ratio.max * 2.0).to_string(),
            serde_json::json!(bounds.face_expand_ratio.max * 2.0),
        ),
    ];
    for (field, text, json) in &table {
        let answers = [
            (
                "form (server function)",
                http.post(format!("{}/api/fn/submit", s.base))
                    .multipart(inputs("a.png").text(field.to_string(), text.clone())),
            ),
            (
                "REST",
                http.post(format!("{}/api/v1/inference/hallo2", s.base))
                    .multipart(inputs("a.png").text(field.to_string(), text.clone())),
            ),
            (
                "REST re-run",
                http.post(format!("{}/api/jobs/{id}/rerun", s.base))
                    .json(&serde_json::json!({ "use_cache": true, *field: json })),
            ),
            (
                "re-run (server function)",
                http.post(format!("{}/api/fn/rerun", s.base))
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(format!("id={id}&fields%5B{field}%5D={text}")),
            ),
        ];
        for (entry, request) in answers {
            let resp = request.send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, 422, "{entry}, {field}={text}: {body}");
            assert_eq!(body["kind"], "bad_parameter", "{entry}: {body}");
            assert_eq!(body["field"], *field, "{entry}: {body}");
            assert!(body["detail"].is_string(), "{entry}: {body}");
        }
    }
    // A body that is not a form, and a form without its image, get the table's refusals from
    // the server function too (never a dropped connection).
    for path in ["submit", "preflight_image", "preflight_audio"] {
        let resp = http
            .post(format!("{}/api/fn/{path}", s.base))
            .json(&serde_json::json!({ "steps": 3 }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        assert_eq!(resp.json::<Value>().await.unwrap()["kind"], "bad_form");
    }
    let resp = http
        .post(format!("{}/api/fn/submit", s.base))
        .multipart(Form::new().part(
            "audio_file",
            Part::bytes(short_speech(0.5)).file_name("speech.wav"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (&body["kind"], &body["field"]),
        (&"missing_field".into(), &"image_file".into())
    );

    wait_final(&s.base, &id).await;
    let jobs: Value = reqwest::get(format!("{}/api/v1/tasks", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs["count"], 1, "nothing refused was queued");
}
