//! Connection slots with generations, so a stale token or timer for a reused
//! slot is recognised and ignored.

pub struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Slab<T> {
    pub fn new() -> Self {
        Slab { slots: Vec::new(), free: Vec::new(), len: 0 }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Store `v`; returns (index, generation).
    pub fn insert(&mut self, v: T) -> (usize, u32) {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            if let Some(s) = self.slots.get_mut(i) {
                s.0 = s.0.wrapping_add(1);
                s.1 = Some(v);
                return (i, s.0);
            }
        }
        self.slots.push((0, Some(v)));
        (self.slots.len() - 1, 0)
    }
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i).and_then(|s| s.1.as_mut())
    }
    pub fn get_gen_mut(&mut self, i: usize, gen: u32) -> Option<&mut T> {
        self.slots.get_mut(i).filter(|s| s.0 == gen).and_then(|s| s.1.as_mut())
    }
    pub fn get_gen(&self, i: usize, gen: u32) -> Option<&T> {
        self.slots.get(i).filter(|s| s.0 == gen).and_then(|s| s.1.as_ref())
    }
    pub fn gen(&self, i: usize) -> Option<u32> {
        self.slots.get(i).filter(|s| s.1.is_some()).map(|s| s.0)
    }
    pub fn remove(&mut self, i: usize) -> Option<T> {
        let v = self.slots.get_mut(i).and_then(|s| s.1.take());
        if v.is_some() {
            self.len -= 1;
            self.free.push(i);
        }
        v
    }
    pub fn indices(&self) -> Vec<usize> {
        self.slots.iter().enumerate().filter(|(_, s)| s.1.is_some()).map(|(i, _)| i).collect()
    }
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self::new()
    }
}
