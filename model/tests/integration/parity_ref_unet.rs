//! Reference UNet (hallo2 `UNet2DConditionModel` fork, write mode) against the official code.
//!
//! `ref_unet_clip<i>.safetensors` hold the single reference-UNet call of each recorded clip of
//! the tiny pipeline run: `sample` = the [ref, motion…] latents once per guidance row,
//! `timestep [0]`, `encoder_hidden_states` = the face tokens ([uncond, cond] under guidance),
//! the discarded `output` and `bank.NN`, the `norm1` output of every transformer block in the
//! reader pairing order (`config/tiny_config.json → bank_order_writer_to_reader`).
use crate::common::{FixtureSet, assert_close, for_each_set, get};

use model::unet_2d::UNet2DConditionModel;

/// `bank_order_writer_to_reader` from the set's config: (writer path, reader path) pairs.
pub fn bank_order(set: &FixtureSet) -> Vec<(String, String)> {
    set.preset()["bank_order_writer_to_reader"]
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

/// The `<prefix><clip>` cases the set has, in clip order.
pub fn clip_cases(set: &FixtureSet, prefix: &str, suffix: &str) -> Vec<String> {
    let names: Vec<String> = (0..)
        .map(|clip| format!("{prefix}{clip}{suffix}"))
        .take_while(|name| set.has_case(name))
        .collect();
    assert!(!names.is_empty(), "{}: no {prefix}0{suffix} case", set.name);
    names
}

fn check_clip(set: &FixtureSet, name: &str) {
    let case = set.case(name);
    let unet = UNet2DConditionModel::new(
        &set.model_config().reference_unet,
        set.net_vb().pp("reference_unet"),
    )
    .unwrap();
    let timestep = get(&case, "timestep").to_vec1::<i64>().unwrap()[0] as f64;
    let (output, bank) = unet
        .forward(
            get(&case, "sample"),
            timestep,
            get(&case, "encoder_hidden_states"),
        )
        .unwrap();
    let sorted = bank.sorted_by_width();
    let order = bank_order(set);
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

/// Every recorded reference-UNet call (one per clip).
#[test]
fn ref_unet_every_recorded_clip() {
    for_each_set(|set| {
        for name in clip_cases(set, "ref_unet_clip", "") {
            check_clip(set, &name);
        }
    });
}
