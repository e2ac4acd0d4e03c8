//! The five trainable modules of hallo2's `Net` wrapper, addressed by their `net.pth` prefixes
//! (`scripts/inference_long.py` @ `58a9aa6`).

use candle_nn::VarBuilder;

use crate::audio_proj::AudioProjModel;
use crate::config::ModelConfig;
use crate::face_locator::FaceLocator;
use crate::heads::ModelHeads;
use crate::image_proj::ImageProjModel;
use crate::unet_2d::UNet2DConditionModel;
use crate::unet_3d::UNet3DConditionModel;

/// `Net(reference_unet, denoising_unet, face_locator, imageproj, audioproj)`.
pub struct Net {
    pub reference_unet: UNet2DConditionModel,
    pub denoising_unet: UNet3DConditionModel,
    pub face_locator: FaceLocator,
    pub imageproj: ImageProjModel,
    pub audioproj: AudioProjModel,
    /// The heads' arguments (read from the checkpoint; callers size their inputs by them).
    pub heads: ModelHeads,
}

/// The components in the order the loader builds them (one load stage each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetPart {
    ReferenceUnet,
    DenoisingUnet,
    Heads,
}

impl Net {
    /// Builds every module from `vb` rooted at the top of `net.pth`.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        Self::new_observed(cfg, vb, &mut |_| Ok(()))
    }

    /// [`Net::new`], calling `before(part)` before each part is built (for load progress); an
    /// error from `before` stops the build.
    pub fn new_observed(
        cfg: &ModelConfig,
        vb: VarBuilder,
        before: &mut dyn FnMut(NetPart) -> candle_core::Result<()>,
    ) -> candle_core::Result<Self> {
        before(NetPart::ReferenceUnet)?;
        let reference_unet =
            UNet2DConditionModel::new(&cfg.reference_unet, vb.pp("reference_unet"))?;
        before(NetPart::DenoisingUnet)?;
        let denoising_unet =
            UNet3DConditionModel::new(&cfg.denoising_unet, vb.pp("denoising_unet"))?;
        before(NetPart::Heads)?;
        Ok(Self {
            reference_unet,
            denoising_unet,
            face_locator: FaceLocator::new(&cfg.heads.face_locator, vb.pp("face_locator"))?,
            imageproj: ImageProjModel::new(&cfg.heads.image_proj, vb.pp("imageproj"))?,
            audioproj: AudioProjModel::new(&cfg.heads.audio_proj, vb.pp("audioproj"))?,
            heads: cfg.heads.clone(),
        })
    }
}
