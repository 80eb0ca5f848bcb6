//! Configs: training configs from a preset, a TOML file and typed overrides, and the pipeline
//! config that wraps one. The `petal` binary turns its flags into [`Overrides`] and
//! [`PipelineOverrides`]; a Rust program fills them in directly.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use model::Arch;
use serde::{Deserialize, Serialize};
use train::{TrainConfig, TrainMode};

use crate::Error;

/// A starting recipe that a config file and overrides refine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Preset {
    /// The project's best recipe ([`TrainConfig::default`]): frozen features of the eval transform,
    /// a linear head, AdamW, cosine schedule, label smoothing 0.2, batch 128, 80 epochs (the best of
    /// the sweep `examples/sweep.toml`).
    #[default]
    #[cfg_attr(feature = "clap", value(alias = "fast"))]
    Default,
    /// The seed project's recipe ([`TrainConfig::seed_preset`]): Adam lr 0.003, 10 epochs, a fresh
    /// augmented view every epoch.
    Seed,
}

impl Preset {
    /// The preset's training config.
    pub fn config(self) -> TrainConfig {
        match self {
            Preset::Default => TrainConfig::default(),
            Preset::Seed => TrainConfig::seed_preset(),
        }
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" | "fast" => Ok(Preset::Default),
            "seed" => Ok(Preset::Seed),
            other => Err(format!("unknown preset {other:?} (default, seed)")),
        }
    }
}

/// Replacements for training-config fields (`None` keeps the config's value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Run name.
    pub name: Option<String>,
    /// Backbone architecture.
    pub arch: Option<Arch>,
    /// Frozen backbone, fine-tuning or partial fine-tuning.
    pub mode: Option<TrainMode>,
    /// Trailing backbone blocks to train (fine-tuning and partial mode).
    pub unfreeze_blocks: Option<usize>,
    /// Partial mode: the activation cache's size limit in MB (0: none but the free disk).
    pub activation_cache_limit_mb: Option<u64>,
    /// Epochs.
    pub epochs: Option<usize>,
    /// Augmented views per training image (frozen mode).
    pub views: Option<usize>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Batch size.
    pub batch_size: Option<usize>,
    /// Seed.
    pub seed: Option<u64>,
    /// Early-stopping patience in epochs (0: off).
    pub patience: Option<usize>,
    /// Where the network runs.
    pub device: Option<model::DeviceSpec>,
    /// libtorch threads (0: all cores).
    pub threads: Option<usize>,
    /// What runs frozen feature extraction: auto, torch or onnxruntime.
    pub runtime: Option<train::Runtime>,
    /// Fraction of each class of the validation split held out from every choice.
    pub holdout: Option<f64>,
    /// Seed of the holdout cut.
    pub holdout_seed: Option<u64>,
    /// Retrain on train plus the selection part for the chosen epoch count.
    pub final_fit: Option<bool>,
    /// Frozen mode: the dtype of the head's products while it trains (bf16 autocast).
    pub train_dtype: Option<train::TrainDtype>,
}

impl Overrides {
    /// Applies the overrides to `cfg`.
    pub fn apply(&self, cfg: &mut TrainConfig) {
        macro_rules! set {
            ($part:ident: $($f:ident),*) => { $( if let Some(v) = &self.$f { cfg.$part.$f = v.clone(); } )* };
        }
        if let Some(name) = &self.name {
            cfg.name.clone_from(name);
        }
        set!(recipe: arch, mode, unfreeze_blocks, epochs, views, lr, batch_size, seed, patience, holdout, holdout_seed, final_fit, train_dtype);
        set!(run: activation_cache_limit_mb, device, threads, runtime);
    }
}

/// Reads a TOML file as a table; the error names the file.
pub fn read_table(path: &Path) -> Result<toml::Table, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::config(path, format!("cannot be read: {e}")))?;
    text.parse::<toml::Table>().map_err(|e| Error::config(path, format!("is not valid TOML: {e}")))
}

/// `base` with every field that `table` sets replaced by the table's value (whole fields: a
/// `[head]` table replaces the whole head). `path` names the file in errors.
pub fn merge_train_config(base: &TrainConfig, table: toml::Table, path: &Path) -> Result<TrainConfig, Error> {
    let mut merged = toml::Table::try_from(base).map_err(|e| Error::config(path, format!("the base config cannot be serialised: {e}")))?;
    merged.extend(table);
    merged.try_into::<TrainConfig>().map_err(|e| Error::config(path, format!("is not a valid training config: {e}")))
}

/// The training config of a run: `preset` (default: [`Preset::Default`]), then the fields the
/// TOML `file` sets, then `overrides`; validated.
pub fn load_train_config(file: Option<&Path>, preset: Option<Preset>, overrides: &Overrides) -> Result<TrainConfig, Error> {
    let base = preset.unwrap_or_default().config();
    let mut cfg = match file {
        Some(p) => merge_train_config(&base, read_table(p)?, p)?,
        None => base,
    };
    overrides.apply(&mut cfg);
    cfg.validate()?;
    Ok(cfg)
}

/// The pipeline config file (TOML). Every field is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Dataset root.
    pub data: Option<PathBuf>,
    /// Pretrained backbone weights.
    pub weights: Option<PathBuf>,
    /// Display names of the classes (JSON object folder → name); default: `cat_to_name.json` in
    /// the data root, else in its parent.
    pub category_names: Option<PathBuf>,
    /// The recipe `[train]` refines (default: the project's best recipe).
    pub preset: Preset,
    /// Parent of run folders.
    pub runs_dir: PathBuf,
    /// Image and feature caches.
    pub cache_dir: PathBuf,
    /// Skip corrupt images instead of stopping.
    pub skip_bad: bool,
    /// Classes shown per prediction.
    pub top_k: usize,
    /// Sample predictions drawn in the report.
    pub samples: usize,
    /// After training, measure test-time augmentation on the validation split and record the best
    /// mode (only if it beats none) in the checkpoint as the default of `predict`.
    pub measure_tta: bool,
    /// The training config (`[train]` table), over the preset.
    pub train: TrainConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            data: None,
            weights: None,
            category_names: None,
            preset: Preset::Default,
            runs_dir: "runs".into(),
            cache_dir: "runs/.cache".into(),
            skip_bad: false,
            top_k: 5,
            samples: 6,
            measure_tta: true,
            train: TrainConfig { name: default_run_name(&Arch::DenseNet121), ..TrainConfig::default() },
        }
    }
}

/// The pipeline's run name when neither the config nor a flag names it.
fn default_run_name(arch: &Arch) -> String {
    format!("{}-pipeline", arch.name())
}

/// Replacements for pipeline-config fields (`None` keeps the file's value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineOverrides {
    /// Dataset root.
    pub data: Option<PathBuf>,
    /// Pretrained weights.
    pub weights: Option<PathBuf>,
    /// Display-name file.
    pub category_names: Option<PathBuf>,
    /// The recipe under `[train]`.
    pub preset: Option<Preset>,
    /// Parent of run folders (the caches go to `<runs_dir>/.cache`).
    pub runs_dir: Option<PathBuf>,
    /// Training-config fields.
    pub train: Overrides,
}

/// The pipeline config: the TOML `file` (if any) over the defaults, its `[train]` table over the
/// preset (`overrides.preset`, else the file's `preset`, else the best recipe), then `overrides`;
/// validated.
pub fn load_pipeline_config(file: Option<&Path>, overrides: &PipelineOverrides) -> Result<PipelineConfig, Error> {
    let (mut table, path) = match file {
        Some(p) => (read_table(p)?, p.to_path_buf()),
        None => (toml::Table::new(), PathBuf::from("(defaults)")),
    };
    let preset = match (overrides.preset, table.get("preset")) {
        (Some(p), _) => p,
        (None, Some(v)) => v.as_str().ok_or_else(|| Error::config(&path, "preset must be a string"))?.parse().map_err(|e| Error::config(&path, e))?,
        (None, None) => Preset::Default,
    };
    let train_table = match table.remove("train") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(Error::config(&path, "`train` must be a table ([train])")),
        None => toml::Table::new(),
    };
    let named = train_table.contains_key("name");
    let mut train = merge_train_config(&preset.config(), train_table, &path)?;
    let mut pc: PipelineConfig = table.try_into().map_err(|e| Error::config(&path, format!("is not a valid pipeline config: {e}")))?;
    pc.preset = preset;
    overrides.train.apply(&mut train);
    if !named && overrides.train.name.is_none() {
        train.name = default_run_name(&train.recipe.arch);
    }
    pc.train = train;
    let o = overrides;
    if o.data.is_some() {
        pc.data.clone_from(&o.data);
    }
    if o.weights.is_some() {
        pc.weights.clone_from(&o.weights);
    }
    if o.category_names.is_some() {
        pc.category_names.clone_from(&o.category_names);
    }
    if let Some(r) = &o.runs_dir {
        pc.runs_dir = r.clone();
        pc.cache_dir = r.join(".cache");
    }
    pc.train.validate()?;
    Ok(pc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipeline.toml")
    }

    /// The `[train]` config of `examples/<name>`, as the pipeline loads it.
    fn example_train(name: &str) -> TrainConfig {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name);
        load_pipeline_config(Some(&file), &PipelineOverrides::default()).expect(name).train
    }

    /// Asserts that `variant` is `base` but for the architecture and the run name (a comparison
    /// that changes one thing), and that it is a valid recipe.
    fn assert_only_the_arch_differs(variant: &TrainConfig, base: &TrainConfig) {
        let recipe = train::Recipe { arch: base.recipe.arch.clone(), ..variant.recipe.clone() };
        assert_eq!(&TrainConfig { name: base.name.clone(), recipe, ..variant.clone() }, base);
        variant.validate().expect("a valid recipe");
    }

    #[test]
    fn the_documented_example_config_loads_with_every_field() {
        let pc = load_pipeline_config(Some(&example()), &PipelineOverrides::default()).expect("examples/pipeline.toml");
        assert_eq!(pc.train.recipe.arch, Arch::EfficientNetLite0);
        assert_eq!(pc.data.as_deref(), Some(Path::new("../shared/data/flowers102-mini")));
        assert_eq!(pc.train.name, "lite0");
        // Fields the file leaves out come from the preset (the best recipe), not from elsewhere.
        assert_eq!(pc.train.recipe.label_smoothing, TrainConfig::default().recipe.label_smoothing);
    }

    #[test]
    fn the_ensemble_example_config_names_the_three_lite_backbones_at_288_pixels() {
        let r = example_train("pipeline-ensemble.toml").recipe;
        let want: Arch = "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2".parse().expect("ensemble");
        assert_eq!(r.arch, want);
        assert_eq!((r.image_size, r.resize_size), (288, 329));
        assert_eq!((r.lr, r.weight_decay, r.label_smoothing), (0.00249, 0.01, 0.3));
        assert_eq!(r.epochs, TrainConfig::default().recipe.epochs);
    }

    #[test]
    fn the_partial_recipe_example_is_the_ensemble_split_before_each_members_head_unit() {
        let train = example_train("pipeline-best-partial.toml");
        let r = &train.recipe;
        assert_eq!(r.arch, "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2".parse::<Arch>().expect("ensemble"));
        assert_eq!((r.mode, r.unfreeze_blocks, r.arch.backbone_blocks().last().map(String::as_str)), (TrainMode::Partial, 1, Some("head")));
        // The best trial of examples/sweep-best-partial.toml (docs/sweep-best-partial/best.toml).
        assert_eq!((r.lr, r.backbone_lr_scale, r.epochs), (0.0015, 0.3, 8));
        assert!(r.final_fit && r.holdout == 0.5);
        r.validate().expect("a valid recipe");
    }

    #[test]
    fn the_multi_scale_example_is_the_best_recipe_with_each_member_again_at_224_pixels() {
        let (multi, best) = (example_train("pipeline-best-multiscale.toml"), example_train("pipeline-best.toml"));
        let want: Arch =
            "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2+efficientnet_lite0@224+efficientnet_lite1@224+efficientnet_lite2@224"
                .parse()
                .expect("multi-scale ensemble");
        assert_eq!(multi.recipe.arch, want);
        // Everything else is the frozen best recipe's.
        assert_only_the_arch_differs(&multi, &best);
    }

    #[test]
    fn the_lite0_partial_example_is_the_partial_recipe_on_one_backbone() {
        let (lite0, best) = (example_train("pipeline-lite0-partial.toml"), example_train("pipeline-best-partial.toml"));
        assert_eq!(lite0.recipe.arch, Arch::EfficientNetLite0);
        assert_eq!((lite0.recipe.mode, lite0.recipe.arch.backbone_blocks().last().map(String::as_str)), (TrainMode::Partial, Some("head")));
        assert_only_the_arch_differs(&lite0, &best);
    }

    #[test]
    fn flags_override_the_file_and_the_seed_preset_is_the_seeds_recipe() {
        let o = PipelineOverrides {
            data: Some("elsewhere".into()),
            preset: Some(Preset::Seed),
            train: Overrides { epochs: Some(2), arch: Some(Arch::DenseNet121), ..Overrides::default() },
            ..PipelineOverrides::default()
        };
        let pc = load_pipeline_config(Some(&example()), &o).expect("config");
        assert_eq!(pc.data.as_deref(), Some(Path::new("elsewhere")));
        assert_eq!((pc.train.recipe.epochs, pc.train.recipe.arch.clone()), (2, Arch::DenseNet121));
        assert_eq!(pc.train.recipe.optimizer, TrainConfig::seed_preset().recipe.optimizer);
    }

    #[test]
    fn defaults_are_the_best_recipe_of_petal_train() {
        let pc = load_pipeline_config(None, &PipelineOverrides::default()).expect("defaults");
        assert_eq!(pc.train, TrainConfig { name: "densenet121-pipeline".into(), ..TrainConfig::default() });
        assert_eq!(pc, PipelineConfig::default());
        let train = load_train_config(None, None, &Overrides::default()).expect("train defaults");
        assert_eq!(train, TrainConfig::default());
        let seed = load_pipeline_config(None, &PipelineOverrides { preset: Some(Preset::Seed), ..Default::default() }).expect("seed");
        assert_eq!(seed.train, TrainConfig { name: "densenet121-pipeline".into(), ..TrainConfig::seed_preset() });
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "[train]\nepochs = \"ten\"\n").expect("write");
        let err = load_pipeline_config(Some(&p), &PipelineOverrides::default()).expect_err("bad");
        assert!(err.to_string().contains("bad.toml"), "{err}");
        std::fs::write(&p, "colour = 3\n").expect("write");
        let err = load_pipeline_config(Some(&p), &PipelineOverrides::default()).expect_err("unknown field");
        assert!(err.to_string().contains("colour"), "{err}");
        let err = load_train_config(Some(&dir.path().join("absent.toml")), None, &Overrides::default()).expect_err("absent");
        assert!(err.to_string().contains("absent.toml"), "{err}");
    }
}
