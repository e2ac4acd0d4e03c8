//! The arguments of the three small heads (`FaceLocator`, `ImageProjModel`, `AudioProjModel`),
//! read from the shapes of their tensors in `net.pth`.
//!
//! `scripts/inference_long.py` @ `58a9aa6` passes them as literals that fit the released
//! checkpoint only. Every value is a tensor dimension, so the checkpoint states them: a
//! checkpoint with other widths, token counts or block counts builds without a config entry.
//! The audio projection's input width is `window · layers · width`; the wav2vec2 config gives
//! the last two and the window must then be the five frames the audio path builds.

use crate::audio_features::WINDOW_FRAMES;
use crate::audio_proj::AudioProjConfig;
use crate::face_locator::FaceLocatorConfig;
use crate::image_proj::ImageProjConfig;
use crate::wav2vec2::Wav2Vec2Config;

/// `net.pth` prefixes of the heads (the `Net` wrapper's attribute names).
const FACE_LOCATOR: &str = "face_locator";
const IMAGE_PROJ: &str = "imageproj";
const AUDIO_PROJ: &str = "audioproj";

/// The three heads' module arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelHeads {
    pub image_proj: ImageProjConfig,
    pub audio_proj: AudioProjConfig,
    pub face_locator: FaceLocatorConfig,
}

impl ModelHeads {
    /// The literals of `scripts/inference_long.py` @ `58a9aa6` (what the released checkpoint's
    /// shapes say; a test checks that against the full-size manifest).
    pub fn hallo2() -> Self {
        Self {
            image_proj: ImageProjConfig::hallo2(),
            audio_proj: AudioProjConfig::hallo2(),
            face_locator: FaceLocatorConfig::hallo2(),
        }
    }

    /// Reads the heads from `shape(key)` (a tensor's shape in `net.pth`, `None` when absent) and
    /// the wav2vec2 encoder whose hidden states feed the audio projection.
    pub fn from_shapes(
        shape: &dyn Fn(&str) -> Option<Vec<usize>>,
        wav2vec: &Wav2Vec2Config,
    ) -> Result<Self, String> {
        let shapes = Shapes(shape);
        Ok(Self {
            image_proj: image_proj(&shapes)?,
            audio_proj: audio_proj(&shapes, wav2vec)?,
            face_locator: face_locator(&shapes)?,
        })
    }
}

struct Shapes<'a>(&'a dyn Fn(&str) -> Option<Vec<usize>>);

impl Shapes<'_> {
    /// The shape of `key`, which must have `rank` dimensions.
    fn get<const RANK: usize>(&self, key: &str) -> Result<[usize; RANK], String> {
        let shape = (self.0)(key).ok_or_else(|| format!("net.pth has no tensor {key}"))?;
        <[usize; RANK]>::try_from(shape.as_slice())
            .map_err(|_| format!("{key} has shape {shape:?}, expected {RANK} dimensions"))
    }

    fn has(&self, key: &str) -> bool {
        (self.0)(key).is_some()
    }
}

/// `total / part`, when `part` divides `total`.
fn exact_quotient(total: usize, part: usize, what: &str) -> Result<usize, String> {
    if part == 0 || !total.is_multiple_of(part) {
        return Err(format!("{what}: {total} is not a multiple of {part}"));
    }
    Ok(total / part)
}

/// `proj: (tokens·dim, embedding)`, `norm: (dim)`.
fn image_proj(shapes: &Shapes) -> Result<ImageProjConfig, String> {
    let [cross_attention_dim] = shapes.get(&format!("{IMAGE_PROJ}.norm.weight"))?;
    let [projected, clip_embeddings_dim] = shapes.get(&format!("{IMAGE_PROJ}.proj.weight"))?;
    Ok(ImageProjConfig {
        cross_attention_dim,
        clip_embeddings_dim,
        clip_extra_context_tokens: exact_quotient(
            projected,
            cross_attention_dim,
            "imageproj.proj output width over the norm width",
        )?,
    })
}

/// `proj1: (intermediate, window·layers·width)`, `proj3: (tokens·output, intermediate)`,
/// `norm: (output)`.
fn audio_proj(shapes: &Shapes, wav2vec: &Wav2Vec2Config) -> Result<AudioProjConfig, String> {
    let [intermediate_dim, input_dim] = shapes.get(&format!("{AUDIO_PROJ}.proj1.weight"))?;
    let [output_dim] = shapes.get(&format!("{AUDIO_PROJ}.norm.weight"))?;
    let [projected, _] = shapes.get(&format!("{AUDIO_PROJ}.proj3.weight"))?;
    let (blocks, channels) = (wav2vec.num_hidden_layers, wav2vec.hidden_size);
    let seq_len = exact_quotient(
        input_dim,
        blocks * channels,
        "audioproj.proj1 input width over wav2vec2's layers × hidden size",
    )?;
    if seq_len != WINDOW_FRAMES {
        return Err(format!(
            "audioproj.proj1 takes windows of {seq_len} frames of {blocks} × {channels} wav2vec2 \
             features; the audio path builds windows of {WINDOW_FRAMES} frames (does the wav2vec2 \
             config belong to this checkpoint?)"
        ));
    }
    Ok(AudioProjConfig {
        seq_len,
        blocks,
        channels,
        intermediate_dim,
        output_dim,
        context_tokens: exact_quotient(
            projected,
            output_dim,
            "audioproj.proj3 output width over the norm width",
        )?,
    })
}

/// `conv_in: (c₀, conditioning, 3, 3)`, `blocks.{2i}: (cᵢ, cᵢ)`, `blocks.{2i+1}: (cᵢ₊₁, cᵢ)`,
/// `conv_out: (embedding, cₙ, 3, 3)`.
fn face_locator(shapes: &Shapes) -> Result<FaceLocatorConfig, String> {
    let [first, conditioning_channels, _, _] =
        shapes.get(&format!("{FACE_LOCATOR}.conv_in.weight"))?;
    let mut block_out_channels = vec![first];
    while shapes.has(&format!(
        "{FACE_LOCATOR}.blocks.{}.weight",
        2 * block_out_channels.len() - 1
    )) {
        let i = 2 * block_out_channels.len() - 1;
        let [next, _, _, _] = shapes.get(&format!("{FACE_LOCATOR}.blocks.{i}.weight"))?;
        block_out_channels.push(next);
    }
    let [conditioning_embedding_channels, _, _, _] =
        shapes.get(&format!("{FACE_LOCATOR}.conv_out.weight"))?;
    Ok(FaceLocatorConfig {
        conditioning_embedding_channels,
        conditioning_channels,
        block_out_channels,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn shapes_of(heads: &ModelHeads) -> HashMap<String, Vec<usize>> {
        let mut shapes = HashMap::new();
        let ip = &heads.image_proj;
        shapes.insert(
            "imageproj.proj.weight".into(),
            vec![
                ip.clip_extra_context_tokens * ip.cross_attention_dim,
                ip.clip_embeddings_dim,
            ],
        );
        shapes.insert("imageproj.norm.weight".into(), vec![ip.cross_attention_dim]);
        let ap = &heads.audio_proj;
        shapes.insert(
            "audioproj.proj1.weight".into(),
            vec![ap.intermediate_dim, ap.input_dim()],
        );
        shapes.insert(
            "audioproj.proj3.weight".into(),
            vec![ap.context_tokens * ap.output_dim, ap.intermediate_dim],
        );
        shapes.insert("audioproj.norm.weight".into(), vec![ap.output_dim]);
        let fl = &heads.face_locator;
        let c = &fl.block_out_channels;
        shapes.insert(
            "face_locator.conv_in.weight".into(),
            vec![c[0], fl.conditioning_channels, 3, 3],
        );
        for (i, pair) in c.windows(2).enumerate() {
            shapes.insert(
                format!("face_locator.blocks.{}.weight", 2 * i),
                vec![pair[0], pair[0], 3, 3],
            );
            shapes.insert(
                format!("face_locator.blocks.{}.weight", 2 * i + 1),
                vec![pair[1], pair[0], 3, 3],
            );
        }
        shapes.insert(
            "face_locator.conv_out.weight".into(),
            vec![fl.conditioning_embedding_channels, *c.last().unwrap(), 3, 3],
        );
        shapes
    }

    fn wav2vec_for(heads: &ModelHeads) -> Wav2Vec2Config {
        Wav2Vec2Config {
            num_hidden_layers: heads.audio_proj.blocks,
            hidden_size: heads.audio_proj.channels,
            ..Wav2Vec2Config::hallo2()
        }
    }

    #[test]
    fn heads_round_trip_through_their_shapes() {
        let mut other = ModelHeads::hallo2();
        other.image_proj.clip_extra_context_tokens = 3;
        other.audio_proj.blocks = 5;
        other.audio_proj.context_tokens = 7;
        other.face_locator.block_out_channels = vec![8, 24, 40];
        for heads in [ModelHeads::hallo2(), other] {
            let shapes = shapes_of(&heads);
            let read =
                ModelHeads::from_shapes(&|k| shapes.get(k).cloned(), &wav2vec_for(&heads)).unwrap();
            assert_eq!(read, heads);
        }
    }

    #[test]
    fn a_wav2vec2_config_of_another_model_is_refused_by_name() {
        let heads = ModelHeads::hallo2();
        let shapes = shapes_of(&heads);
        let mut wav2vec = wav2vec_for(&heads);
        wav2vec.num_hidden_layers = 24;
        let err = ModelHeads::from_shapes(&|k| shapes.get(k).cloned(), &wav2vec).unwrap_err();
        assert!(err.contains("audioproj.proj1"), "{err}");
        let mut shapes = shapes;
        shapes.remove("imageproj.norm.weight");
        let err =
            ModelHeads::from_shapes(&|k| shapes.get(k).cloned(), &wav2vec_for(&heads)).unwrap_err();
        assert!(err.contains("imageproj.norm.weight"), "{err}");
    }
}
