//! The declared search space: each knob's values, its default, and the settings (one value per
//! knob) the search may try.

use std::collections::BTreeMap;

use super::error::AmplifyError;

/// One knob: a scenario parameter and the values worth trying, in the order declared (which
/// for numbers is usually ascending: neighbours in the list are neighbours in effect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knob {
    pub name: String,
    pub values: Vec<String>,
    /// Index of the default in `values`.
    pub default: usize,
}

impl Knob {
    /// A knob whose default must be one of `values` (a knob declared without values searches
    /// only its default).
    pub fn new(name: &str, default: &str, values: &[&str]) -> Result<Knob, AmplifyError> {
        let values: Vec<String> = if values.is_empty() {
            vec![default.to_string()]
        } else {
            values.iter().map(|v| v.to_string()).collect()
        };
        Knob::from_owned(name.to_string(), default.to_string(), values)
    }

    pub fn from_owned(
        name: String,
        default: String,
        mut values: Vec<String>,
    ) -> Result<Knob, AmplifyError> {
        if values.is_empty() {
            values.push(default.clone());
        }
        for (i, v) in values.iter().enumerate() {
            if values[..i].contains(v) {
                return Err(AmplifyError::DuplicateValue {
                    name,
                    value: v.clone(),
                });
            }
        }
        let Some(default_index) = values.iter().position(|v| *v == default) else {
            return Err(AmplifyError::DefaultNotListed { name, default });
        };
        Ok(Knob {
            name,
            values,
            default: default_index,
        })
    }
}

/// A setting: the index of one value per knob, in knob order.
pub type Arm = Vec<usize>;

/// Every knob of a scenario, in declaration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    knobs: Vec<Knob>,
}

impl Space {
    pub fn new(knobs: Vec<Knob>) -> Result<Space, AmplifyError> {
        if knobs.is_empty() {
            return Err(AmplifyError::NoKnobs);
        }
        for (i, k) in knobs.iter().enumerate() {
            if k.values.is_empty() {
                return Err(AmplifyError::NoValues(k.name.clone()));
            }
            if k.default >= k.values.len() {
                return Err(AmplifyError::DefaultNotListed {
                    name: k.name.clone(),
                    default: format!("#{}", k.default),
                });
            }
            if knobs[..i].iter().any(|o| o.name == k.name) {
                return Err(AmplifyError::Duplicate(k.name.clone()));
            }
        }
        Ok(Space { knobs })
    }

    pub fn knobs(&self) -> &[Knob] {
        &self.knobs
    }

    /// Number of settings (saturating: spaces beyond u64 are searched locally anyway).
    pub fn size(&self) -> u64 {
        self.knobs
            .iter()
            .fold(1u64, |n, k| n.saturating_mul(k.values.len() as u64))
    }

    /// The same space searched from another setting: each `name=value` of `baseline` becomes
    /// that knob's default (what the search starts from and compares the winner against).
    pub fn rebased(mut self, baseline: &BTreeMap<String, String>) -> Result<Space, AmplifyError> {
        for (name, value) in baseline {
            let knob = self
                .knobs
                .iter_mut()
                .find(|k| k.name == *name)
                .ok_or_else(|| AmplifyError::UnknownKnob(name.clone()))?;
            knob.default = knob.values.iter().position(|v| v == value).ok_or_else(|| {
                AmplifyError::DefaultNotListed {
                    name: name.clone(),
                    default: value.clone(),
                }
            })?;
        }
        Ok(self)
    }

    pub fn default_arm(&self) -> Arm {
        self.knobs.iter().map(|k| k.default).collect()
    }

    /// Every setting, when there are at most `limit` of them.
    pub fn all(&self, limit: u64) -> Option<Vec<Arm>> {
        if self.size() > limit {
            return None;
        }
        let mut out = vec![Vec::new()];
        for k in &self.knobs {
            out = out
                .into_iter()
                .flat_map(|a: Arm| {
                    (0..k.values.len()).map(move |v| {
                        let mut b = a.clone();
                        b.push(v);
                        b
                    })
                })
                .collect();
        }
        Some(out)
    }

    /// The settings that differ from `arm` in exactly one knob.
    pub fn neighbours(&self, arm: &[usize]) -> Vec<Arm> {
        let mut out = Vec::new();
        for (i, k) in self.knobs.iter().enumerate() {
            for v in 0..k.values.len() {
                if v != arm[i] {
                    let mut b = arm.to_vec();
                    b[i] = v;
                    out.push(b);
                }
            }
        }
        out
    }

    /// The setting as parameter name -> value, what the scenario loader takes.
    pub fn setting(&self, arm: &[usize]) -> BTreeMap<String, String> {
        self.knobs
            .iter()
            .zip(arm)
            .map(|(k, &v)| (k.name.clone(), k.values[v].clone()))
            .collect()
    }

    /// `name=value` for each knob whose value is not its default ("default" for the default).
    pub fn describe(&self, arm: &[usize]) -> String {
        let changed: Vec<String> = self
            .knobs
            .iter()
            .zip(arm)
            .filter(|(k, &v)| v != k.default)
            .map(|(k, &v)| format!("{}={}", k.name, k.values[v]))
            .collect();
        if changed.is_empty() {
            "default".into()
        } else {
            changed.join(" ")
        }
    }

    /// The arm of a setting given by values (unknown names or values: None).
    pub fn arm_of(&self, setting: &BTreeMap<String, String>) -> Option<Arm> {
        self.knobs
            .iter()
            .map(|k| match setting.get(&k.name) {
                Some(v) => k.values.iter().position(|x| x == v),
                None => Some(k.default),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> Space {
        Space::new(vec![
            Knob::new("engine", "io_uring", &["io_uring", "libaio"]).unwrap(),
            Knob::new("iodepth", "2", &["1", "2", "8"]).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn all_settings_in_order() {
        let s = space();
        assert_eq!(s.size(), 6);
        assert_eq!(
            s.all(10).unwrap(),
            vec![
                vec![0, 0],
                vec![0, 1],
                vec![0, 2],
                vec![1, 0],
                vec![1, 1],
                vec![1, 2]
            ]
        );
        assert_eq!(s.all(5), None);
    }

    #[test]
    fn a_rebased_space_starts_from_the_baseline() {
        let base = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let s = space().rebased(&base(&[("iodepth", "8")])).unwrap();
        assert_eq!(s.setting(&s.default_arm())["iodepth"], "8");
        assert_eq!(s.setting(&s.default_arm())["engine"], "io_uring");
        assert_eq!(
            space().rebased(&base(&[("nope", "1")])).unwrap_err(),
            AmplifyError::UnknownKnob("nope".into())
        );
        assert!(matches!(
            space().rebased(&base(&[("iodepth", "7")])).unwrap_err(),
            AmplifyError::DefaultNotListed { .. }
        ));
    }

    #[test]
    fn neighbours_change_one_knob() {
        let s = space();
        assert_eq!(
            s.neighbours(&[0, 1]),
            vec![vec![1, 1], vec![0, 0], vec![0, 2]]
        );
    }

    #[test]
    fn settings_and_descriptions() {
        let s = space();
        assert_eq!(s.default_arm(), vec![0, 1]);
        assert_eq!(s.describe(&[0, 1]), "default");
        assert_eq!(s.describe(&[1, 2]), "engine=libaio iodepth=8");
        let setting = s.setting(&[1, 0]);
        assert_eq!(setting["engine"], "libaio");
        assert_eq!(setting["iodepth"], "1");
        assert_eq!(s.arm_of(&setting), Some(vec![1, 0]));
        let mut bad = setting.clone();
        bad.insert("iodepth".into(), "64".into());
        assert_eq!(s.arm_of(&bad), None);
    }

    #[test]
    fn bad_spaces_are_named() {
        assert_eq!(Space::new(vec![]), Err(AmplifyError::NoKnobs));
        assert_eq!(
            Knob::new("jobs", "5", &["4", "12"]),
            Err(AmplifyError::DefaultNotListed {
                name: "jobs".into(),
                default: "5".into()
            })
        );
        assert_eq!(
            Knob::new("jobs", "4", &["4", "4"]),
            Err(AmplifyError::DuplicateValue {
                name: "jobs".into(),
                value: "4".into()
            })
        );
        let k = Knob::new("a", "1", &[]).unwrap();
        assert_eq!(k.values, vec!["1"]);
        assert_eq!(
            Space::new(vec![k.clone(), k]),
            Err(AmplifyError::Duplicate("a".into()))
        );
    }
}
