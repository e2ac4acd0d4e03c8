//! Reference UNet (hallo2 `UNet2DConditionModel` fork, write mode) against the official code.
//!
//! `ref_unet_clip{0,1}.safetensors` hold the single reference-UNet call of each clip of the tiny
//! pipeline run: `sample (6,4,8,8)` = [ref, m1, m2] latents twice, `timestep [0]`,
//! `encoder_hidden_states (2,4,32)` = [uncond, cond] face tokens, the discarded `output` and
//! `bank.00..09`, the `norm1` output of every transformer block in the reader pairing order
//! (`config/tiny_config.json → bank_order_writer_to_reader`).
use crate::common;

use common::{assert_close, case, get, tiny_dir, tiny_net_vb, tiny_weights};
use model::unet_2d::{UNet2DConditionConfig, UNet2DConditionModel};

fn tiny_config() -> UNet2DConditionConfig {
    let path = tiny_weights().join("stable-diffusion-v1-5/unet/config.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `bank_order_writer_to_reader` from the fixture config: (writer path, reader path) pairs.
fn bank_order() -> Vec<(String, String)> {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny_dir().join("config/tiny_config.json")).unwrap())
            .unwrap();
    json["bank_order_writer_to_reader"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_string(),
                pair[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn check_clip(name: &str) {
    let case = case(name);
    let unet =
        UNet2DConditionModel::new(&tiny_config(), tiny_net_vb().pp("reference_unet")).unwrap();
    let timestep = get(&case, "timestep").to_vec1::<i64>().unwrap()[0] as f64;
    let (output, bank) = unet
        .forward(
            get(&case, "sample"),
            timestep,
            get(&case, "encoder_hidden_states"),
        )
        .unwrap();
    let sorted = bank.sorted_by_width();
    let order = bank_order();
    assert_eq!(sorted.len(), order.len(), "bank entries");
    for (k, (entry, (writer, _))) in sorted.iter().zip(&order).enumerate() {
        assert_eq!(
            &entry.path, writer,
            "bank entry {k} comes from the wrong block"
        );
        let expected = get(&case, &format!("bank.{k:02}"));
        assert_close(
            &format!("{name} bank.{k:02} ({writer})"),
            &entry.features,
            expected,
            1e-4,
            0.0,
        );
    }
    assert_close(
        &format!("{name} output"),
        &output,
        get(&case, "output"),
        1e-4,
        0.0,
    );
}

#[test]
fn ref_unet_clip0() {
    check_clip("ref_unet_clip0");
}

#[test]
fn ref_unet_clip1() {
    check_clip("ref_unet_clip1");
}
