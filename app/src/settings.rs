//! The running studio's generation settings, as the server's config states them: the defaults
//! of the active profile (its inference yaml), the bounds every entry checks parameters
//! against (`[bounds]` of the server config), the frame rate and the upload limits. The pages
//! take their sliders, defaults and estimates from here, never from constants of their own.

use serde::{Deserialize, Serialize};

/// The closed range a parameter may take.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bound<T> {
    pub min: T,
    pub max: T,
}

impl<T: PartialOrd + Copy> Bound<T> {
    pub const fn new(min: T, max: T) -> Self {
        Self { min, max }
    }

    pub fn contains(&self, v: T) -> bool {
        self.min <= v && v <= self.max
    }
}

/// What a job's parameters may be (one table for the form, the REST API and re-runs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParamBounds {
    pub pose_weight: Bound<f64>,
    pub face_weight: Bound<f64>,
    pub lip_weight: Bound<f64>,
    pub cfg_scale: Bound<f64>,
    pub face_expand_ratio: Bound<f64>,
    pub steps: Bound<usize>,
}

impl Default for ParamBounds {
    /// Weights 0–2 (the official UI's range), CFG 1–20 (1: no guidance), face expand 1–2,
    /// 1–200 denoising steps.
    fn default() -> Self {
        Self {
            pose_weight: Bound::new(0.0, 2.0),
            face_weight: Bound::new(0.0, 2.0),
            lip_weight: Bound::new(0.0, 2.0),
            cfg_scale: Bound::new(1.0, 20.0),
            face_expand_ratio: Bound::new(1.0, 2.0),
            steps: Bound::new(1, 200),
        }
    }
}

/// The real-valued parameters, in the order every check goes through them.
pub const FLOAT_PARAMS: [&str; 5] = [
    "pose_weight",
    "face_weight",
    "lip_weight",
    "cfg_scale",
    "face_expand_ratio",
];

impl ParamBounds {
    /// The bounds of [`FLOAT_PARAMS`], in that order.
    pub fn floats(&self) -> [Bound<f64>; 5] {
        [
            self.pose_weight,
            self.face_weight,
            self.lip_weight,
            self.cfg_scale,
            self.face_expand_ratio,
        ]
    }

    /// The first bound that is empty or not finite, as a sentence.
    pub fn check(&self) -> Result<(), String> {
        for (name, b) in FLOAT_PARAMS.into_iter().zip(self.floats()) {
            if !(b.min.is_finite() && b.max.is_finite() && b.min <= b.max) {
                return Err(format!(
                    "bounds.{name}: min {} and max {} must be numbers with min ≤ max",
                    b.min, b.max
                ));
            }
        }
        if self.steps.min == 0 || self.steps.min > self.steps.max {
            return Err(format!(
                "bounds.steps: min {} and max {} must satisfy 1 ≤ min ≤ max",
                self.steps.min, self.steps.max
            ));
        }
        Ok(())
    }
}

/// What a job gets for each parameter it leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ParamDefaults {
    pub pose_weight: f64,
    pub face_weight: f64,
    pub lip_weight: f64,
    pub steps: usize,
    pub cfg_scale: f64,
    pub face_expand_ratio: f64,
    /// The seed the form proposes (the official inference script's).
    pub seed: u64,
}

impl ParamDefaults {
    /// `configs/inference/long.yaml` of fudan-generative-ai/hallo2, seed 42 as in its script.
    pub const OFFICIAL: Self = Self {
        pose_weight: 1.0,
        face_weight: 1.0,
        lip_weight: 1.0,
        steps: 40,
        cfg_scale: 3.5,
        face_expand_ratio: 1.2,
        seed: 42,
    };
}

/// The settings the pages are built from (part of every page's snapshot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationSettings {
    /// The profile's inference yaml values.
    pub defaults: ParamDefaults,
    pub bounds: ParamBounds,
    /// Frames of video per second of audio.
    pub fps: u32,
    /// Whether this studio loads the vocal separator (jobs may then turn it off).
    pub vocal_separation: bool,
    /// The upload limit (both files together), bytes.
    pub upload_bytes: u64,
    /// The longest speech accepted, seconds.
    pub audio_seconds: f64,
}

impl Default for GenerationSettings {
    /// The official profile with the server config's defaults.
    fn default() -> Self {
        Self {
            defaults: ParamDefaults::OFFICIAL,
            bounds: ParamBounds::default(),
            fps: 25,
            vocal_separation: true,
            upload_bytes: 50 * 1024 * 1024,
            audio_seconds: 600.0,
        }
    }
}

impl GenerationSettings {
    /// The first default that lies outside its bound, as a sentence (a config mistake the
    /// server refuses to start with: its own form would be refused).
    pub fn check(&self) -> Result<(), String> {
        self.bounds.check()?;
        let (d, b) = (&self.defaults, &self.bounds);
        let values = [
            d.pose_weight,
            d.face_weight,
            d.lip_weight,
            d.cfg_scale,
            d.face_expand_ratio,
        ];
        for ((name, bound), v) in FLOAT_PARAMS.into_iter().zip(b.floats()).zip(values) {
            if !bound.contains(v) {
                return Err(format!(
                    "the inference config's {name} {v} is outside bounds.{name} ({} to {})",
                    bound.min, bound.max
                ));
            }
        }
        if !b.steps.contains(d.steps) {
            return Err(format!(
                "the inference config's {} steps are outside bounds.steps ({} to {})",
                d.steps, b.steps.min, b.steps.max
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_outside_their_bounds_are_named() {
        assert_eq!(GenerationSettings::default().check(), Ok(()));
        let mut s = GenerationSettings::default();
        s.defaults.steps = 500;
        assert!(s.check().unwrap_err().contains("500 steps"));
        let mut s = GenerationSettings::default();
        s.bounds.cfg_scale = Bound::new(5.0, 2.0);
        assert!(s.check().unwrap_err().contains("bounds.cfg_scale"));
        let mut s = GenerationSettings::default();
        s.bounds.steps.min = 0;
        assert!(s.check().unwrap_err().contains("bounds.steps"));
    }
}
