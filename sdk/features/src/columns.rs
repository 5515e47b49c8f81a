//! Raw branch values of a chunk of events: one number per event (flat) or a
//! list per event (jagged: counts and the concatenated values). Values are
//! shared (`Arc`): reading a branch in an expression copies nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Why columns cannot be assembled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ColumnError {
    /// A column of another number of events than the chunk's.
    #[error("branch `{name}` has {got} events, expected {want}")]
    Events { name: String, got: usize, want: usize },
    /// Counts that do not add up to the values given.
    #[error("branch `{name}`: its counts add up to {counts}, but {values} values were given")]
    Counts { name: String, counts: u64, values: usize },
}

/// One branch's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// One value per event.
    Flat(Arc<Vec<f64>>),
    /// Event `i`'s values are `content[offsets[i]..offsets[i + 1]]`.
    Jagged { offsets: Arc<Vec<usize>>, content: Arc<Vec<f64>> },
}

/// The branches of a chunk of `events` events.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    events: usize,
    map: BTreeMap<String, Column>,
    /// The last offsets inserted, shared by the branches of one collection.
    last_offsets: Option<Arc<Vec<usize>>>,
}

impl Columns {
    /// No branches yet, for a chunk of `events` events.
    pub fn new(events: usize) -> Columns {
        Columns { events, ..Default::default() }
    }

    /// The number of events.
    pub fn events(&self) -> usize {
        self.events
    }

    /// A branch by name.
    pub fn get(&self, name: &str) -> Option<&Column> {
        self.map.get(name)
    }

    /// Whether branch `name` is there.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Adds a flat branch.
    pub fn insert_flat(&mut self, name: &str, values: Vec<f64>) -> Result<(), ColumnError> {
        if values.len() != self.events {
            return Err(ColumnError::Events { name: name.to_string(), got: values.len(), want: self.events });
        }
        self.map.insert(name.to_string(), Column::Flat(Arc::new(values)));
        Ok(())
    }

    /// Adds a jagged branch from per-event counts and the concatenated values.
    pub fn insert_jagged(&mut self, name: &str, counts: &[u64], content: Vec<f64>) -> Result<(), ColumnError> {
        if counts.len() != self.events {
            return Err(ColumnError::Events { name: name.to_string(), got: counts.len(), want: self.events });
        }
        let mut offsets = Vec::with_capacity(counts.len() + 1);
        let mut at: u64 = 0;
        offsets.push(0usize);
        for &c in counts {
            at = at.saturating_add(c);
            offsets.push(usize::try_from(at).unwrap_or(usize::MAX));
        }
        if at != content.len() as u64 {
            return Err(ColumnError::Counts { name: name.to_string(), counts: at, values: content.len() });
        }
        let offsets = match &self.last_offsets {
            Some(prev) if **prev == offsets => prev.clone(),
            _ => Arc::new(offsets),
        };
        self.last_offsets = Some(offsets.clone());
        self.map.insert(name.to_string(), Column::Jagged { offsets, content: Arc::new(content) });
        Ok(())
    }
}
