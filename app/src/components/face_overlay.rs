//! The face pre-flight over the portrait's preview: the face box, the mesh, Hallo2's face and
//! lip regions and its three soft masks, with switches for each layer; and the request that
//! fetches it (`preflight_image`), of which only the newest answer is shown.

use leptos::prelude::*;

use crate::components::upload_field::FieldError;
use crate::jobs::PreflightView;

/// Which parts of the overlay are drawn.
#[derive(Clone, Copy)]
pub struct Layers {
    pub mesh: RwSignal<bool>,
    pub masks: RwSignal<bool>,
    pub regions: RwSignal<bool>,
}

impl Layers {
    pub fn all_on() -> Self {
        Self {
            mesh: RwSignal::new(true),
            masks: RwSignal::new(true),
            regions: RwSignal::new(true),
        }
    }
}

/// Numbers requests so that a slow answer to an older one is dropped.
#[derive(Clone, Copy)]
pub struct Requests(StoredValue<u64>);

impl Requests {
    pub fn new() -> Self {
        Self(StoredValue::new(0))
    }

    pub fn next(self) -> u64 {
        self.0.update_value(|n| *n += 1);
        self.0.get_value()
    }

    pub fn is_latest(self, id: u64) -> bool {
        self.0.get_value() == id
    }
}

impl Default for Requests {
    fn default() -> Self {
        Self::new()
    }
}

/// The pre-flight of the chosen portrait: the newest answer and the layer switches.
#[derive(Clone, Copy)]
pub struct Preflight {
    pub view: RwSignal<Option<PreflightView>>,
    pub layers: Layers,
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    requests: Requests,
}

impl Preflight {
    pub fn new() -> Self {
        Self {
            view: RwSignal::new(None),
            layers: Layers::all_on(),
            requests: Requests::new(),
        }
    }

    /// Asks about the portrait chosen in the input `input_id` for `ratio`; the current overlay
    /// stays until the answer replaces it, a refusal shows on the image field.
    pub fn request(self, input_id: &'static str, ratio: f64, error: RwSignal<Option<FieldError>>) {
        #[cfg(feature = "hydrate")]
        {
            let extra = [("face_expand_ratio", ratio.to_string())];
            let Some(form) = crate::browser::file_form(input_id, "image_file", &extra) else {
                self.view.set(None);
                return;
            };
            let id = self.requests.next();
            leptos::task::spawn_local(async move {
                let result = crate::api::preflight_image(form.into()).await;
                if !self.requests.is_latest(id) {
                    return;
                }
                match result {
                    Ok(view) => self.view.set(Some(view)),
                    Err(e) => {
                        self.view.set(None);
                        error.set(Some(FieldError::from_body(e, Some("image_file"))));
                    }
                }
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (self, input_id, ratio, error);
    }
}

impl Default for Preflight {
    fn default() -> Self {
        Self::new()
    }
}

/// The overlay, in the image's own pixel coordinates. The soft masks are 64×64 images
/// stretched over the whole portrait, as the model stretches them over its latent grid.
#[component]
pub fn FaceOverlay(preflight: PreflightView, layers: Layers) -> impl IntoView {
    let p = preflight;
    let (w, h) = (p.width, p.height);
    let [x0, y0, x1, y1] = p.face_box;
    let r = (w.max(h) as f32 / 300.0).max(1.0);
    let m = p.masks;
    let shown = |on: RwSignal<bool>| move || if on.get() { "inline" } else { "none" };
    let region = |[x0, y0, x1, y1]: [u32; 4], class: &'static str| {
        view! { <rect x=x0 y=y0 width=x1 - x0 height=y1 - y0 class=class></rect> }
    };
    let soft = |id: &'static str, png: String| {
        view! {
            <mask id=id>
                <image href=png width=w height=h preserveAspectRatio="none"></image>
            </mask>
        }
    };
    view! {
        <svg id="preflight-overlay" class="overlay" viewBox=format!("0 0 {w} {h}") preserveAspectRatio="none">
            <defs>
                {soft("mask-pose", m.pose_png)}
                {soft("mask-face", m.face_png)}
                {soft("mask-lip", m.lip_png)}
            </defs>
            <g class="soft-masks" style:display=shown(layers.masks)>
                <rect class="soft-pose" width=w height=h mask="url(#mask-pose)"></rect>
                <rect class="soft-face" width=w height=h mask="url(#mask-face)"></rect>
                <rect class="soft-lip" width=w height=h mask="url(#mask-lip)"></rect>
            </g>
            <g class="regions" style:display=shown(layers.regions)>
                {region(m.face_region, "face-region")}
                {region(m.lip_region, "lip-region")}
            </g>
            <g class="detection" style:display=shown(layers.mesh)>
                <rect x=x0 y=y0 width=x1 - x0 height=y1 - y0 class="face-box"></rect>
                {p.landmarks.into_iter().map(|[x, y]| view! { <circle cx=x cy=y r=r class="mesh"></circle> }).collect_view()}
            </g>
        </svg>
    }
}

/// Switches for the overlay's layers, with the colour key. The checkboxes have no `name`, so
/// the form never submits them.
#[component]
pub fn OverlayLegend(layers: Layers, ratio: f64) -> impl IntoView {
    let switch = |on: RwSignal<bool>, id: &'static str| {
        view! {
            <input
                type="checkbox"
                id=id
                prop:checked=move || on.get()
                on:change=move |ev| on.set(event_target_checked(&ev))
            />
        }
    };
    view! {
        <div class="legend" id="overlay-layers">
            <label>{switch(layers.mesh, "layer-mesh")}<span class="swatch detection"></span>"face box and mesh"</label>
            <label>
                {switch(layers.masks, "layer-masks")}
                "soft masks: "<span class="swatch pose"></span>"pose "<span class="swatch face"></span>"face "
                <span class="swatch lip"></span>"lips"
            </label>
            <label>{switch(layers.regions, "layer-regions")}{format!("regions: face ×{ratio:.2}, lips ×2")}</label>
        </div>
    }
}

// Render tests need the `ssr` renderer (on whenever the workspace's tests build).
#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use crate::jobs::MaskPreview;

    fn preflight() -> PreflightView {
        PreflightView {
            width: 600,
            height: 300,
            face_box: [10.0, 20.0, 110.0, 140.0],
            score: 0.9,
            landmarks: vec![[50.0, 60.0]; 3],
            faces_found: 1,
            yaw_degrees: 0.0,
            warnings: vec![],
            masks: MaskPreview {
                face_expand_ratio: 1.35,
                face_region: [5, 10, 120, 150],
                lip_region: [40, 100, 80, 120],
                pose_png: "data:image/png;base64,AA".into(),
                face_png: "data:image/png;base64,BB".into(),
                lip_png: "data:image/png;base64,CC".into(),
            },
        }
    }

    #[test]
    fn the_overlay_is_drawn_in_image_pixels_with_every_layer() {
        let owner = Owner::new();
        owner.set();
        let layers = Layers::all_on();
        layers.masks.set(false);
        let html = view! { <FaceOverlay preflight=preflight() layers=layers/> }.to_html();
        assert!(html.contains(r#"viewBox="0 0 600 300""#), "{html}");
        assert_eq!(html.matches(r#"class="mesh""#).count(), 3);
        assert!(
            html.contains(r#"x="10" y="20" width="100" height="120" class="face-box""#),
            "{html}"
        );
        assert!(
            html.contains(r#"width="115" height="140" class="face-region""#),
            "{html}"
        );
        for png in ["AA", "BB", "CC"] {
            assert!(html.contains(&format!("base64,{png}")));
        }
        // The switched-off layer is hidden, the others shown.
        assert!(
            html.contains(r#"class="soft-masks" style="display:none;""#),
            "{html}"
        );
        assert!(
            html.contains(r#"class="regions" style="display:inline;""#),
            "{html}"
        );
    }

    #[test]
    fn the_legend_names_the_ratio() {
        let owner = Owner::new();
        owner.set();
        let html = view! { <OverlayLegend layers=Layers::all_on() ratio=1.35/> }.to_html();
        assert!(html.contains("face ×1.35"), "{html}");
        assert_eq!(html.matches(r#"type="checkbox""#).count(), 3);
    }
}
