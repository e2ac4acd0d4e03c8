//! `/`: the generation form. Its controls are disabled until the backend is ready; their
//! defaults are the official inference config's (`configs/inference/long.yaml`).

use leptos::prelude::*;

use crate::live::LiveBackend;

/// Defaults of the official Hallo2 inference config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationDefaults {
    pub pose_weight: f32,
    pub face_weight: f32,
    pub lip_weight: f32,
    pub steps: u32,
    pub cfg_scale: f32,
    pub seed: u64,
    pub face_expand_ratio: f32,
}

impl GenerationDefaults {
    /// `long.yaml` of fudan-generative-ai/hallo2 (seed 42 as in its inference script).
    pub const OFFICIAL: Self = Self {
        pose_weight: 1.0,
        face_weight: 1.0,
        lip_weight: 1.0,
        steps: 40,
        cfg_scale: 3.5,
        seed: 42,
        face_expand_ratio: 1.2,
    };
}

#[component]
pub fn StudioPage() -> impl IntoView {
    let live = expect_context::<LiveBackend>();
    let not_ready = move || live.status.with(|s| !s.state.is_ready());
    let d = GenerationDefaults::OFFICIAL;
    view! {
        <section class="panel">
            <h1>"Generate a talking portrait"</h1>
            <form id="generate-form" class="generate" on:submit=|ev| ev.prevent_default()>
                <fieldset id="generate-controls" disabled=not_ready>
                    <div class="inputs">
                        <label>
                            "Portrait (jpg, png, webp)"
                            <input type="file" name="image_file" accept="image/jpeg,image/png,image/webp"/>
                        </label>
                        <label>
                            "Speech (wav, mp3, m4a, ogg, flac)"
                            <input type="file" name="audio_file" accept="audio/*,.m4a,.flac"/>
                        </label>
                    </div>
                    <div class="controls">
                        <Slider name="pose_weight" label="Pose weight" min=0.0 max=2.0 step=0.05 value=d.pose_weight/>
                        <Slider name="face_weight" label="Face weight" min=0.0 max=2.0 step=0.05 value=d.face_weight/>
                        <Slider name="lip_weight" label="Lip weight" min=0.0 max=2.0 step=0.05 value=d.lip_weight/>
                        <Slider name="cfg_scale" label="CFG scale" min=1.0 max=10.0 step=0.1 value=d.cfg_scale/>
                        <Slider name="face_expand_ratio" label="Face expand ratio" min=1.0 max=2.0 step=0.05 value=d.face_expand_ratio/>
                        <label>
                            "Denoising steps"
                            <input type="number" name="steps" min="1" max="100" value=d.steps.to_string()/>
                        </label>
                        <label>
                            "Seed"
                            <input type="number" name="seed" min="0" value=d.seed.to_string()/>
                        </label>
                    </div>
                </fieldset>
                <button id="generate" type="submit" disabled=true title="Jobs arrive with the queue (issue #6)">
                    "Generate"
                </button>
                <p class="muted" id="generate-note">
                    {move || {
                        if not_ready() {
                            "The controls unlock when the backend is ready."
                        } else {
                            "The model is ready. Submitting jobs arrives with the job queue (issue #6)."
                        }
                    }}
                </p>
            </form>
        </section>
    }
}

/// A range input with its value shown beside it.
#[component]
fn Slider(
    name: &'static str,
    label: &'static str,
    min: f32,
    max: f32,
    step: f32,
    value: f32,
) -> impl IntoView {
    let current = RwSignal::new(value);
    view! {
        <label class="slider">
            <span>{label}</span>
            <input
                type="range"
                name=name
                min=min.to_string()
                max=max.to_string()
                step=step.to_string()
                value=value.to_string()
                on:input=move |ev| {
                    if let Ok(v) = event_target_value(&ev).parse() {
                        current.set(v);
                    }
                }
            />
            <output>{move || format!("{:.2}", current.get())}</output>
        </label>
    }
}
