//! The speech's outline with a playhead that follows the audio player (a click plays from
//! there), and the line naming its format.

use leptos::prelude::*;

use crate::browser::seek_to_click;
use crate::jobs::AudioPreview;

/// Id of the audio player the waveform follows and seeks.
pub const PLAYER_ID: &str = "audio-preview";

#[component]
pub fn Waveform(audio: AudioPreview, playhead: RwSignal<f64>) -> impl IntoView {
    let n = audio.waveform.len().max(1);
    let duration = audio.duration_s.max(1e-9);
    let x = move || {
        format!(
            "{:.1}",
            (playhead.get() / duration).clamp(0.0, 1.0) * n as f64
        )
    };
    view! {
        <svg
            id="waveform"
            class="waveform"
            viewBox=format!("0 0 {n} 100")
            preserveAspectRatio="none"
            role="img"
            aria-label="waveform of the speech (click to play from there)"
            on:click=move |ev| seek_to_click(&ev, PLAYER_ID, duration)
        >
            <path class="wave" d=waveform_path(&audio.waveform)></path>
            <line class="playhead" x1=x x2=x y1="0" y2="100"></line>
        </svg>
    }
}

/// A closed outline, mirrored about the middle line, of levels scaled to the loudest one, in
/// a `len × 100` box.
pub fn waveform_path(levels: &[f32]) -> String {
    let loudest = levels.iter().fold(0f32, |m, v| m.max(*v));
    let scale = if loudest > 0.0 { 48.0 / loudest } else { 0.0 };
    let mut d = String::from("M0,50");
    for (i, v) in levels.iter().enumerate() {
        d.push_str(&format!(" L{:.1},{:.1}", i as f32 + 0.5, 50.0 - v * scale));
    }
    d.push_str(&format!(" L{},50", levels.len()));
    for (i, v) in levels.iter().enumerate().rev() {
        d.push_str(&format!(" L{:.1},{:.1}", i as f32 + 0.5, 50.0 + v * scale));
    }
    d.push_str(" Z");
    d
}

/// "mp3 · 44.1 kHz · stereo · peak −3.2 dBFS".
pub fn audio_format(a: &AudioPreview) -> String {
    let channels = match a.channels {
        1 => "mono".to_string(),
        2 => "stereo".to_string(),
        n => format!("{n} channels"),
    };
    format!(
        "{} · {} kHz · {channels} · peak {:.1} dBFS",
        a.codec,
        f64::from(a.sample_rate) / 1000.0,
        a.peak_dbfs
    )
}

// Render tests need the `ssr` renderer (on whenever the workspace's tests build).
#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;

    fn preview() -> AudioPreview {
        AudioPreview {
            duration_s: 3.0,
            frames: 75,
            sample_rate: 44_100,
            channels: 2,
            codec: "mp3".into(),
            peak_dbfs: -3.24,
            waveform: vec![0.25, 0.5],
        }
    }

    #[test]
    fn the_waveform_is_mirrored_and_scaled_to_the_loudest_slice() {
        assert_eq!(
            waveform_path(&[0.25, 0.5]),
            "M0,50 L0.5,26.0 L1.5,2.0 L2,50 L1.5,98.0 L0.5,74.0 Z"
        );
        // Nothing audible draws the middle line, never NaN.
        assert_eq!(waveform_path(&[0.0]), "M0,50 L0.5,50.0 L1,50 L0.5,50.0 Z");
    }

    #[test]
    fn the_audio_format_line_names_codec_rate_channels_and_peak() {
        assert_eq!(
            audio_format(&preview()),
            "mp3 · 44.1 kHz · stereo · peak -3.2 dBFS"
        );
    }

    #[test]
    fn renders_the_outline_and_the_playhead_at_its_time() {
        let owner = Owner::new();
        owner.set();
        let playhead = RwSignal::new(1.5);
        let html = view! { <Waveform audio=preview() playhead=playhead/> }.to_html();
        assert!(html.contains(r#"viewBox="0 0 2 100""#), "{html}");
        assert!(html.contains(&waveform_path(&[0.25, 0.5])), "{html}");
        // Half-way through 3 s of 2 slices.
        assert!(html.contains(r#"x1="1.0""#), "{html}");
    }
}
