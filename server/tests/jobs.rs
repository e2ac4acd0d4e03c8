//! Jobs through the real HTTP server on the tiny profile: the old REST flow (submit → poll →
//! download, checked with ffprobe), the bad-input matrix, a full queue, cancel, waiting for the
//! model, and a `kill -9` of the server with one job running and one queued.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use app::jobs::{JobRecord, TaskStatus};
use app::types::LoadStage;
use common::*;
use reqwest::multipart::{Form, Part};
use server::config::LoadMode;

const JOB_TIMEOUT: Duration = Duration::from_secs(300);

async fn task(base: &str, id: &str) -> TaskStatus {
    reqwest::get(format!("{base}/api/v1/tasks/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the task until `pred` holds; returns every status seen.
async fn poll_until(base: &str, id: &str, pred: impl Fn(&TaskStatus) -> bool) -> Vec<TaskStatus> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let t = task(base, id).await;
        let done = pred(&t);
        seen.push(t);
        if done {
            return seen;
        }
        assert!(
            start.elapsed() < JOB_TIMEOUT,
            "timed out: {:?}",
            seen.last()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the task until it ends and asserts it completed; returns every status seen.
async fn wait_completed(base: &str, id: &str) -> Vec<TaskStatus> {
    let seen = poll_until(base, id, |t| {
        t.status == "completed" || t.status == "failed"
    })
    .await;
    assert_eq!(
        seen.last().unwrap().status,
        "completed",
        "{id}: {:?}",
        seen.last()
    );
    seen
}

/// ffprobe's view of an MP4: (codec, pix_fmt, fps) of the video, whether there is audio, and
/// the video duration.
fn probe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (Debian ffmpeg; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_flow_submit_poll_download_with_range_and_a_playable_mp4() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.data_dir = scratch.path().join("data");
    let s = serve(config).await;

    let resp = submit(
        &s.base,
        form(
            file_part(PORTRAIT, "astronaut.png"),
            file_part(SPEECH, "speech.wav"),
        )
        .text("seed", "7")
        .text("steps", "2"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(body["message"], "Inference task queued successfully");
    let id = body["task_id"].as_str().unwrap().to_string();

    let seen = poll_until(&s.base, &id, |t| {
        t.status == "completed" || t.status == "failed"
    })
    .await;
    let last = seen.last().unwrap();
    assert_eq!(last.status, "completed", "{last:?}");
    assert_eq!(last.progress, 100);
    assert!(seen.iter().all(|t| t.progress <= 100));
    let result = last.result.as_ref().unwrap();
    assert_eq!(result["video_url"], format!("/api/v1/tasks/{id}/video"));

    // The whole record: the seed used, provenance and per-stage timings.
    let job: JobRecord = reqwest::get(format!("{}/api/jobs/{id}", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job.seed_used, Some(7));
    assert_eq!(job.image_name, "astronaut.png");
    let made = job.made_with.as_ref().unwrap();
    assert_eq!((made.device.as_str(), made.dtype.as_str()), ("cpu", "f32"));
    assert!(made.weights.iter().any(|(f, _)| f == "hallo2/net.pth"));
    // The studio separates the vocals by default, as the official pipeline does.
    assert!(
        made.vocal_separator
            .as_deref()
            .is_some_and(|s| s.starts_with("Kim_Vocal_2.onnx")),
        "{made:?}"
    );
    // The last finished frame (the live view's preview) is the last clip's.
    assert_eq!(job.files.frame.as_deref(), Some("last_frame.png"));
    assert_eq!(job.files.frame_clip, job.progress.clips);
    let resp = reqwest::get(format!("{}/api/jobs/{id}/frame", s.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    let png = image::load_from_memory(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (png.width(), png.height()),
        (64, 64),
        "the tiny profile's resolution"
    );
    let stages: Vec<&str> = job.timings.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(stages, ["preprocess", "denoise", "decode", "encode"]);
    let on_disk: JobRecord = serde_json::from_slice(
        &std::fs::read(scratch.path().join("data/jobs").join(&id).join("job.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk, job, "job.json is the record the API serves");

    // Download, whole and by range.
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/tasks/{id}/video", s.base);
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/mp4");
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.contains(&format!("hallo2_{id}.mp4")),
        "{disposition}"
    );
    let mp4 = resp.bytes().await.unwrap();
    let resp = client
        .get(&url)
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()["content-range"].to_str().unwrap(),
        format!("bytes 0-99/{}", mp4.len())
    );
    assert_eq!(resp.bytes().await.unwrap(), mp4.slice(0..100));

    let path = scratch.path().join("probe.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let info = probe(&path);
    let streams = info["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["pix_fmt"], "yuv420p");
    assert_eq!(video["r_frame_rate"], "25/1");
    assert!(streams.iter().any(|s| s["codec_type"] == "audio"), "{info}");
    let duration: f64 = video["duration"].as_str().unwrap().parse().unwrap();
    assert!(
        (duration - job.audio_seconds).abs() <= 1.0 / 25.0 + 1e-6,
        "video {duration} s vs audio {} s",
        job.audio_seconds
    );

    // Re-run from the stored inputs with the same parameters and seed: the same video.
    let resp = client
        .post(format!("{}/api/jobs/{id}/rerun", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let again = task_id(resp).await;
    let seen = poll_until(&s.base, &again, |t| {
        t.status == "completed" || t.status == "failed"
    })
    .await;
    assert_eq!(seen.last().unwrap().status, "completed");
    let rerun_mp4 = client
        .get(format!("{}/api/v1/tasks/{again}/video", s.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        rerun_mp4, mp4,
        "same inputs, parameters and seed: the same file"
    );
    client
        .delete(format!("{}/api/jobs/{again}", s.base))
        .send()
        .await
        .unwrap();

    // The list has it; deleting a finished job removes it and its files.
    let list: serde_json::Value = reqwest::get(format!("{}/api/v1/tasks", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["tasks"][&id]["status"], "completed");
    assert_eq!(list["count"], 1);
    // The old API's DELETE only cancels (400 for a finished task, as there); ours deletes.
    let resp = client
        .delete(format!("{}/api/v1/tasks/{id}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client
        .delete(format!("{}/api/jobs/{id}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 404);
    assert!(!scratch.path().join("data/jobs").join(&id).exists());
}

/// (form, expected status, expected kind, expected field)
type Case = (&'static str, Form, u16, &'static str, Option<&'static str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_their_specific_4xx_and_nothing_is_queued() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.data_dir = scratch.path().join("data");
    // Lazy: nothing loads unless a job is accepted (none should be).
    config.load = LoadMode::Lazy;
    config.limits.audio_seconds = 4.0;
    config.limits.upload_bytes = 2_000_000;
    let s = serve(config).await;

    let png = std::fs::read(fixture(PORTRAIT)).unwrap();
    let wav = std::fs::read(fixture(SPEECH)).unwrap();
    let silent = {
        let mut w = wav.clone();
        for b in &mut w[44..] {
            *b = 0;
        }
        w
    };
    let bytes = |b: Vec<u8>, name: &str| Part::bytes(b).file_name(name.to_string());
    let good_image = || bytes(png.clone(), "me.png");
    let good_audio = || bytes(wav.clone(), "me.wav");
    let cases: Vec<Case> = vec![
        (
            "corrupt image",
            form(bytes(vec![7u8; 5000], "me.png"), good_audio()),
            415,
            "not_an_image",
            Some("image_file"),
        ),
        (
            "truncated image",
            form(bytes(png[..png.len() / 3].to_vec(), "me.png"), good_audio()),
            422,
            "invalid_image",
            Some("image_file"),
        ),
        (
            "no face",
            form(file_part("face/coffee.png", "coffee.png"), good_audio()),
            422,
            "no_face",
            Some("image_file"),
        ),
        (
            "0-byte audio",
            form(good_image(), bytes(Vec::new(), "me.wav")),
            422,
            "empty_audio",
            Some("audio_file"),
        ),
        (
            "silent audio",
            form(good_image(), bytes(silent, "me.wav")),
            422,
            "silent_audio",
            Some("audio_file"),
        ),
        (
            "unsupported codec",
            form(
                good_image(),
                file_part("speech/variants/speech_opus.ogg", "me.ogg"),
            ),
            415,
            "unsupported_audio",
            Some("audio_file"),
        ),
        (
            "over-long audio",
            form(
                good_image(),
                file_part(
                    "speech/sense_and_sensibility_01_austen_64kb-0870.wav",
                    "long.wav",
                ),
            ),
            422,
            "audio_too_long",
            Some("audio_file"),
        ),
        (
            "oversized upload",
            form(good_image(), bytes(vec![0u8; 2_100_000], "big.wav")),
            413,
            "too_large",
            Some("audio_file"),
        ),
        (
            "wrong field name",
            Form::new()
                .part("image", good_image())
                .part("audio_file", good_audio()),
            400,
            "unknown_field",
            None,
        ),
        (
            "missing audio",
            Form::new().part("image_file", good_image()),
            422,
            "missing_field",
            Some("audio_file"),
        ),
        (
            "bad parameter",
            form(good_image(), good_audio()).text("steps", "-3"),
            422,
            "bad_parameter",
            Some("steps"),
        ),
        (
            "not a switch",
            form(good_image(), good_audio()).text("separate_vocals", "maybe"),
            422,
            "bad_parameter",
            Some("separate_vocals"),
        ),
    ];
    for (what, form, status, kind, field) in cases {
        let resp = submit(&s.base, form).await;
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["kind"], kind, "{what}: {body}");
        assert_eq!(body["field"].as_str(), field, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}"
        );
    }
    assert!(s.studio_state.jobs.list().is_empty());
    let leftovers = std::fs::read_dir(scratch.path().join("data/jobs"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "rejected uploads leave no files");
    assert_eq!(
        s.studio_state.backend.state().name(),
        "starting",
        "nothing triggered a load"
    );

    // Path tricks and non-UTF-8 names: accepted, stored under our own names, shown sanitised.
    let raw_name =
        Part::bytes(wav.clone()).file_name(String::from_utf8_lossy(b"caf\xe9.wav").into_owned());
    let resp = submit(
        &s.base,
        form(bytes(png.clone(), "../../etc/passwd.png"), raw_name),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let id = task_id(resp).await;
    let job = s.studio_state.jobs.get(&id).unwrap();
    assert_eq!(job.image_name, "passwd.png");
    assert_eq!(
        (job.files.image.as_str(), job.files.audio.as_str()),
        ("image.png", "audio.wav")
    );
    // The worker may be rewriting the record as we look: its atomic write's `.tmp` is ours too.
    let mut names: Vec<String> = std::fs::read_dir(scratch.path().join("data/jobs").join(&id))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "job.json.tmp")
        .collect();
    names.sort();
    assert_eq!(names, ["audio.wav", "image.png", "job.json", "task.log"]);
    assert!(!scratch.path().join("etc").exists());

    // Ids from the path never reach the filesystem unchecked.
    for bad in ["..%2F..%2Fetc%2Fpasswd", "not-a-uuid"] {
        let resp = reqwest::get(format!("{}/api/v1/tasks/{bad}/video", s.base))
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_jobs_wait_for_the_model() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.data_dir = scratch.path().join("data");
    // A load that fails: the job waits for the model (and the queue stays full).
    config.weights.path = Some(scratch.path().join("no-weights-here"));
    config.limits.queue_capacity = 1;
    let s = serve(config).await;

    let resp = submit(
        &s.base,
        form(file_part(PORTRAIT, "a.png"), file_part(SPEECH, "a.wav")),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let id = task_id(resp).await;
    let t = task(&s.base, &id).await;
    assert_eq!(
        (t.status.as_str(), t.state.as_str()),
        ("queued", "waiting_for_model")
    );

    let resp = submit(
        &s.base,
        form(file_part(PORTRAIT, "b.png"), file_part(SPEECH, "b.wav")),
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["kind"],
        "busy"
    );

    // Cancelling a waiting job is immediate and frees the slot.
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/v1/tasks/{id}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(task(&s.base, &id).await.status, "cancelled");
    let resp = submit(
        &s.base,
        form(file_part(PORTRAIT, "c.png"), file_part(SPEECH, "c.wav")),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_submitted_while_loading_starts_when_ready_and_a_running_job_can_be_cancelled() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.data_dir = scratch.path().join("data");
    config.load = LoadMode::Lazy;
    let s = serve(config).await;

    // Lazy: the first job starts the load and waits for it.
    let resp = submit(
        &s.base,
        form(file_part(PORTRAIT, "a.png"), file_part(SPEECH, "a.wav")).text("steps", "2"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let first = task_id(resp).await;
    assert_eq!(task(&s.base, &first).await.state, "waiting_for_model");
    let seen = wait_completed(&s.base, &first).await;
    assert!(
        seen.iter()
            .any(|t| t.state == "generating" && t.eta_s.is_some())
            || seen.len() < 3
    );

    // A long job (many steps), cancelled while it generates.
    let resp = submit(
        &s.base,
        form(file_part(PORTRAIT, "b.png"), file_part(SPEECH, "b.wav")).text("steps", "200"),
    )
    .await;
    let second = task_id(resp).await;
    poll_until(&s.base, &second, |t| {
        t.state == "generating" && t.progress >= 1
    })
    .await;
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/v1/tasks/{second}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cancelled_at = Instant::now();
    let seen = poll_until(&s.base, &second, |t| t.status != "processing").await;
    assert_eq!(
        seen.last().unwrap().status,
        "cancelled",
        "{:?}",
        seen.last()
    );
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(10),
        "stops at the next step"
    );
    assert!(
        !scratch
            .path()
            .join("data/jobs")
            .join(&second)
            .join("output.mp4")
            .exists()
    );
}

/// The server binary on `config`, logging to `log`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_job_running_and_one_queued_loses_neither() {
    let scratch = tempfile::tempdir().unwrap();
    let root = repo_root();
    let toml = format!(
        "bind = \"127.0.0.1:0\"\nload = \"eager\"\ndevice = \"cpu\"\ndtype = \"f32\"\n\
         inference = {:?}\ncache_dir = {:?}\nlog_dir = {:?}\ndata_dir = {:?}\n\
         [weights]\nsource = \"local\"\npath = {:?}\n",
        root.join("configs/inference/long_tiny.yaml"),
        scratch.path().join("cache"),
        scratch.path().join("logs"),
        scratch.path().join("data"),
        tiny_weights(),
    );
    let config = scratch.path().join("studio.toml");
    std::fs::write(&config, toml).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");

    let mut server = spawn_server(&config, port, &scratch.path().join("run1.log"));
    wait_live(&base).await;
    let mut ids = Vec::new();
    // 1 s of audio = 7 tiny clips: 40 steps each keep the first job busy long enough to be
    // killed mid-generation, and short enough to run again.
    for (name, steps) in [("running", "40"), ("queued", "2")] {
        let audio = Part::bytes(short_speech(1.0)).file_name("a.wav");
        let resp = submit(
            &base,
            form(file_part(PORTRAIT, "a.png"), audio).text("steps", steps),
        )
        .await;
        assert_eq!(resp.status(), 200, "{name}");
        ids.push(task_id(resp).await);
    }
    poll_until(&base, &ids[0], |t| {
        t.state == "generating" && t.progress >= 1
    })
    .await;
    assert_eq!(task(&base, &ids[1]).await.status, "queued");
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();

    let mut server = spawn_server(&config, port, &scratch.path().join("run2.log"));
    wait_live(&base).await;
    // The interrupted job runs again (it is not lost), then the queued one.
    let first = task(&base, &ids[0]).await;
    assert!(
        first.status_message.contains("restart") || first.status != "failed",
        "{first:?}"
    );
    for id in &ids {
        wait_completed(&base, id).await;
    }
    let job: JobRecord = reqwest::get(format!("{base}/api/jobs/{}", ids[0]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job.attempts, 2, "ran again after the restart");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test]
async fn a_nearly_full_disk_refuses_uploads_with_507() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.data_dir = scratch.path().join("data");
    config.load = LoadMode::Lazy;
    config.limits.min_free_bytes = u64::MAX / 4;
    let s = serve(config).await;
    let resp = submit(
        &s.base,
        form(file_part(PORTRAIT, "a.png"), file_part(SPEECH, "a.wav")),
    )
    .await;
    assert_eq!(resp.status(), 507);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "disk_full", "{body}");
    assert!(s.studio_state.jobs.list().is_empty());
}

/// A config file for the spawned server: the tiny profile with checkpoints every
/// `checkpoint_seconds` of video, everything under `scratch`.
fn resumable_config(scratch: &Path, checkpoint_seconds: f64) -> std::path::PathBuf {
    let root = repo_root();
    let toml = format!(
        "bind = \"127.0.0.1:0\"\nload = \"eager\"\ndevice = \"cpu\"\ndtype = \"f32\"\n\
         inference = {:?}\ncache_dir = {:?}\nlog_dir = {:?}\ndata_dir = {:?}\n\
         checkpoint_seconds = {checkpoint_seconds}\n\
         [weights]\nsource = \"local\"\npath = {:?}\n[warmup]\nenabled = false\n",
        root.join("configs/inference/long_tiny.yaml"),
        scratch.join("cache"),
        scratch.join("logs"),
        scratch.join("data"),
        tiny_weights(),
    );
    let config = scratch.join("studio.toml");
    std::fs::write(&config, toml).unwrap();
    config
}

/// Submits `form` and waits until the job completes; returns its id.
async fn run_to_completion(base: &str, form: Form) -> String {
    let id = task_id(submit(base, form).await).await;
    wait_completed(base, &id).await;
    id
}

/// Interrupts a job after its second checkpoint (`stop` is `kill -9` or SIGTERM), restarts the
/// server and checks that the job continues from its checkpoint and that its video equals an
/// uninterrupted run's, frame for frame. Returns the interrupted job's record.
async fn interrupt_and_resume(signal: &str) -> JobRecord {
    let scratch = tempfile::tempdir().unwrap();
    let inference = model::config::InferenceConfig::from_yaml_file(
        &repo_root().join("configs/inference/long_tiny.yaml"),
    )
    .unwrap();
    let clip_frames = inference.data.n_sample_frames;
    let fps = inference.data.export_video.fps;
    // A checkpoint every 2 clips; 2.4 s of audio is many of them.
    let config = resumable_config(scratch.path(), 2.0 * clip_frames as f64 / f64::from(fps));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(&config, port, &scratch.path().join("run1.log"));
    wait_live(&base).await;
    let id = task_id(submit(&base, fixed_job(2.4, 6)).await).await;
    let checkpoint = scratch
        .path()
        .join("data/jobs")
        .join(&id)
        .join("work/checkpoint.json");
    // Past the second checkpoint (clip 4 of the job's clips).
    poll_until(&base, &id, |t| {
        let next_clip = std::fs::read(&checkpoint)
            .ok()
            .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
            .and_then(|c| c["next_clip"].as_u64());
        t.state == "generating" && next_clip.is_some_and(|n| n >= 4)
    })
    .await;
    let stopped_at = Instant::now();
    match signal {
        "KILL" => server.kill().unwrap(),
        _ => {
            let status = Command::new("kill")
                .args([&format!("-{signal}"), &server.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    let exit = server.wait().unwrap();
    let saved_next_clip = std::fs::read(&checkpoint)
        .ok()
        .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
        .and_then(|c| c["next_clip"].as_u64());
    if signal == "TERM" {
        assert!(exit.success(), "{exit:?}");
        assert!(
            stopped_at.elapsed() < Duration::from_secs(30),
            "SIGTERM took {:?}",
            stopped_at.elapsed()
        );
        // Paused, not failed: queued again without spending an attempt.
        let stored: JobRecord = serde_json::from_slice(
            &std::fs::read(scratch.path().join("data/jobs").join(&id).join("job.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(stored.state.name(), "queued", "{stored:?}");
        assert_eq!(stored.attempts, 0, "{stored:?}");
        assert!(stored.message.contains("Paused"), "{stored:?}");
    }

    let mut server = spawn_server(&config, port, &scratch.path().join("run2.log"));
    wait_live(&base).await;
    wait_completed(&base, &id).await;
    let job = job_record(&base, &id).await;
    let resumed = job.resumed_from_clip.expect("resumed from a checkpoint");
    assert!(
        resumed > 1,
        "resumed from clip {resumed}, not from the start"
    );
    assert!(job.message.contains("resumed from clip"), "{job:?}");
    // Shown 1-based: the checkpoint's next clip (0-based) + 1.
    assert_eq!(Some(resumed as u64 - 1), saved_next_clip, "{job:?}");

    // The same job uninterrupted: the same frames.
    let again = run_to_completion(&base, fixed_job(2.4, 6)).await;
    let jobs = scratch.path().join("data/jobs");
    let resumed_video = jobs.join(&id).join("output.mp4");
    let whole_video = jobs.join(&again).join("output.mp4");
    assert_eq!(decoded_frames(&resumed_video), decoded_frames(&whole_video));
    assert!(!jobs.join(&id).join("work/checkpoint.json").exists());
    server.kill().unwrap();
    server.wait().unwrap();
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_job_resumes_from_the_last_checkpoint_with_the_same_frames() {
    let job = interrupt_and_resume("KILL").await;
    assert_eq!(job.attempts, 2, "the crash counts as an attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_job_pauses_it_and_the_next_start_resumes_it_with_the_same_frames() {
    let job = interrupt_and_resume("TERM").await;
    assert_eq!(job.attempts, 1, "a shutdown is not an attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_writes_the_studios_video_for_the_same_inputs_and_seed() {
    let scratch = tempfile::tempdir().unwrap();
    let config = resumable_config(scratch.path(), 2.5);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn_server(&config, port, &scratch.path().join("run.log"));
    wait_live(&base).await;
    let id = run_to_completion(&base, fixed_job(1.5, 2)).await;
    server.kill().unwrap();
    server.wait().unwrap();
    let studio_video = scratch
        .path()
        .join("data/jobs")
        .join(&id)
        .join("output.mp4");

    let speech = scratch.path().join("speech.wav");
    std::fs::write(&speech, short_speech(1.5)).unwrap();
    let cli = Path::new(env!("CARGO_BIN_EXE_hallo2"));
    let out = scratch.path().join("cli.mp4");
    let status = Command::new(cli)
        .arg("generate")
        .arg("--weights")
        .arg(tiny_weights())
        .arg("--config")
        .arg(repo_root().join("configs/inference/long_tiny.yaml"))
        .arg("--image")
        .arg(fixture(PORTRAIT))
        .arg("--audio")
        .arg(&speech)
        .arg("--out")
        .arg(&out)
        .args(["--seed", "7", "--steps", "2", "--checkpoint-seconds", "2.5"])
        .arg("--cache-dir")
        .arg(scratch.path().join("cli-cache"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(decoded_frames(&out), decoded_frames(&studio_video));
}

/// With `vocal_separation = false` the separator is neither a load stage nor a file to fetch,
/// and a job that asks for separation is refused before anything is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vocal_separation_off_is_not_loaded_and_refused_per_job() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny_config(scratch.path());
    config.data_dir = scratch.path().join("data");
    config.load = LoadMode::Lazy;
    config.vocal_separation = false;
    assert!(
        !server::worker::files_for(&config)
            .iter()
            .any(|f| f.starts_with("audio_separator/"))
    );
    let s = serve(config).await;
    assert!(
        !s.studio_state
            .backend
            .stages()
            .contains(&LoadStage::VocalSeparator)
    );
    let resp = submit(
        &s.base,
        form(
            file_part(PORTRAIT, "astronaut.png"),
            file_part(SPEECH, "speech.wav"),
        )
        .text("separate_vocals", "true"),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["field"], "separate_vocals", "{body}");
    assert!(s.studio_state.jobs.list().is_empty());
}
