//! The studio's previews over HTTP: `/api/preflight` (face, mesh, Hallo2's mask regions and
//! soft masks for a face expand ratio) and `/api/preflight/audio` (duration, frames, format,
//! waveform), with the same refusals as a submission.

mod common;

use app::jobs::{AudioPreview, PreflightView};
use base64::Engine;
use common::*;
use reqwest::multipart::{Form, Part};
use server::config::LoadMode;

async fn post(base: &str, path: &str, form: Form) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}{path}"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

fn part(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes).file_name(name.to_string())
}

fn decode_png(data_url: &str) -> image::GrayImage {
    let b64 = data_url
        .strip_prefix("data:image/png;base64,")
        .expect("a PNG data URL");
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    image::load_from_memory(&png).unwrap().to_luma8()
}

fn area([x0, y0, x1, y1]: [u32; 4]) -> u32 {
    (x1 - x0) * (y1 - y0)
}

#[tokio::test]
async fn the_face_preflight_draws_hallo2s_regions_for_the_asked_ratio() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.load = LoadMode::Lazy;
    let s = serve(config).await;
    let png = std::fs::read(fixture(PORTRAIT)).unwrap();
    let ask = |ratio: Option<&str>| {
        let mut form = Form::new().part("image_file", part(png.clone(), "me.png"));
        if let Some(r) = ratio {
            form = form.text("face_expand_ratio", r.to_string());
        }
        post(&s.base, "/api/preflight", form)
    };

    let resp = ask(None).await;
    assert_eq!(resp.status(), 200);
    let p: PreflightView = resp.json().await.unwrap();
    let m = &p.masks;
    // The official ratio when none is asked for.
    assert_eq!(m.face_expand_ratio, 1.2);
    assert_eq!((p.width, p.height, p.landmarks.len()), (512, 512, 468));
    // The lips sit inside the face region, which holds the detected face's centre.
    let [fx0, fy0, fx1, fy1] = m.face_region;
    let [lx0, ly0, lx1, ly1] = m.lip_region;
    assert!(
        fx0 <= lx0 && lx1 <= fx1 && fy0 <= ly0 && ly1 <= fy1,
        "{m:?}"
    );
    let centre = [
        (p.face_box[0] + p.face_box[2]) / 2.0,
        (p.face_box[1] + p.face_box[3]) / 2.0,
    ];
    assert!((fx0 as f32..fx1 as f32).contains(&centre[0]), "{m:?}");
    assert!((fy0 as f32..fy1 as f32).contains(&centre[1]), "{m:?}");

    // The soft masks are 64×64: the pose mask is dark on the face and bright in the corners,
    // the lip mask bright at the lips' centre.
    let (pose, face, lip) = (
        decode_png(&m.pose_png),
        decode_png(&m.face_png),
        decode_png(&m.lip_png),
    );
    for mask in [&pose, &face, &lip] {
        assert_eq!(mask.dimensions(), (64, 64));
    }
    let at =
        |mask: &image::GrayImage, x: u32, y: u32| mask.get_pixel(x * 64 / 512, y * 64 / 512)[0];
    let (cx, cy) = ((fx0 + fx1) / 2, (fy0 + fy1) / 2);
    assert!(at(&pose, cx, cy) < 50 && at(&pose, 0, 0) > 200);
    assert!(at(&lip, (lx0 + lx1) / 2, (ly0 + ly1) / 2) > 200);
    assert!(at(&face, 0, 0) < 10 && at(&face, cx, fy0 + 5) > 100);

    // A larger ratio widens the face region, not the lips'.
    let wide: PreflightView = ask(Some("1.8")).await.json().await.unwrap();
    assert_eq!(wide.masks.face_expand_ratio, 1.8);
    assert!(area(wide.masks.face_region) > area(m.face_region));
    assert_eq!(wide.masks.lip_region, m.lip_region);

    // Out-of-range ratio, no face, and no image: the submission's refusals.
    let resp = ask(Some("5")).await;
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["field"], "face_expand_ratio", "{body}");
    let coffee = std::fs::read(fixture("face/coffee.png")).unwrap();
    let form = Form::new().part("image_file", part(coffee, "coffee.png"));
    let resp = post(&s.base, "/api/preflight", form).await;
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (&body["kind"], &body["field"]),
        (&"no_face".into(), &"image_file".into())
    );
    let resp = post(&s.base, "/api/preflight", Form::new().text("steps", "3")).await;
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (&body["kind"], &body["field"]),
        (&"missing_field".into(), &"image_file".into())
    );
    assert!(s.studio_state.jobs.list().is_empty());
}

#[tokio::test]
async fn the_audio_preflight_decodes_like_a_submission() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.load = LoadMode::Lazy;
    config.limits.audio_seconds = 2.5;
    let s = serve(config.clone()).await;
    let wav = std::fs::read(fixture(SPEECH)).unwrap();
    let ask = |bytes: Vec<u8>, name: &str| {
        post(
            &s.base,
            "/api/preflight/audio",
            Form::new().part("audio_file", part(bytes, name)),
        )
    };

    // 2.99 s is over this server's 2.5 s limit: refused as a submission would be.
    let resp = ask(wav.clone(), "speech.wav").await;
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (&body["kind"], &body["field"]),
        (&"audio_too_long".into(), &"audio_file".into())
    );

    // The first two seconds (16 kHz mono 16-bit PCM after a 44-byte header) pass.
    let mut short = wav[..44 + 2 * 16_000 * 2].to_vec();
    let data_len = (short.len() - 44) as u32;
    short[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
    short[40..44].copy_from_slice(&data_len.to_le_bytes());
    let resp = ask(short.clone(), "speech.wav").await;
    assert_eq!(resp.status(), 200);
    let a: AudioPreview = resp.json().await.unwrap();
    assert!((a.duration_s - 2.0).abs() < 1e-6, "{a:?}");
    assert_eq!((a.frames, a.sample_rate, a.channels), (50, 16_000, 1));
    assert_eq!(a.codec, "pcm_s16le");
    assert_eq!(a.waveform.len(), server::jobs::preview::WAVEFORM_BUCKETS);
    let loudest = a.waveform.iter().fold(0f32, |m, v| m.max(*v));
    assert!(
        (20.0 * f64::from(loudest).log10() - a.peak_dbfs).abs() < 0.5,
        "{a:?}"
    );
    assert!(a.waveform.iter().all(|v| (0.0..=1.0).contains(v)));

    // Silence and garbage get their specific kinds.
    let mut silent = short;
    silent[44..].fill(0);
    let resp = ask(silent, "speech.wav").await;
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "silent_audio", "{body}");
    let resp = ask(vec![3u8; 4000], "speech.mp3").await;
    assert_eq!(resp.status(), 415);
    let resp = post(&s.base, "/api/preflight/audio", Form::new()).await;
    assert_eq!(resp.status(), 400);
}
