//! The nesting rules of lazy MMU mode (Linux 7.0) as pure functions of a
//! task's two counts: what each call does to them and which arch hook it
//! must call. No kernel dependencies, so the same file is property-tested
//! on the host (tests/host/props) against a model written another way.

/// A task's lazy MMU counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Nesting depth of enable/disable.
    pub enable: u8,
    /// Nesting depth of pause/resume.
    pub pause: u8,
}

/// A call the state did not allow. It is refused and the counts stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LazyMmuMisuse {
    /// enable with the nesting count already at 255.
    EnableOverflow,
    /// disable with no section open.
    DisableWithoutEnable,
    /// pause with the pause count already at 255.
    PauseOverflow,
    /// resume with no pause to undo.
    ResumeWithoutPause,
}

impl core::fmt::Display for LazyMmuMisuse {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            LazyMmuMisuse::EnableOverflow => "lazy_mmu_mode_enable with sections already nested 255 deep",
            LazyMmuMisuse::DisableWithoutEnable => "lazy_mmu_mode_disable with no section open",
            LazyMmuMisuse::PauseOverflow => "lazy_mmu_mode_pause with pauses already nested 255 deep",
            LazyMmuMisuse::ResumeWithoutPause => "lazy_mmu_mode_resume with no pause to undo",
        })
    }
}

/// The arch hook a call must make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Nothing to do (nested, or paused).
    None,
    /// The mode starts: the outermost enable.
    Enter,
    /// The mode ends: the outermost disable.
    Leave,
    /// A nested disable: what is pending is made visible, the mode stays.
    Flush,
    /// The first pause of an open section: the mode stops for now.
    Pause,
    /// The last resume of an open section: the mode starts again.
    Resume,
}

pub type Transition = Result<(Counts, Hook), LazyMmuMisuse>;

impl Counts {
    /// Lazy MMU mode is active: enabled and not paused.
    pub fn is_active(self) -> bool {
        self.enable > 0 && self.pause == 0
    }

    /// Opens a section. While paused it does nothing at all.
    pub fn enable(self) -> Transition {
        if self.pause > 0 {
            return Ok((self, Hook::None));
        }
        let enable = self.enable.checked_add(1).ok_or(LazyMmuMisuse::EnableOverflow)?;
        Ok((Counts { enable, ..self }, if self.enable == 0 { Hook::Enter } else { Hook::None }))
    }

    /// Closes a section: the outermost leaves, a nested one flushes. While
    /// paused it does nothing at all.
    pub fn disable(self) -> Transition {
        if self.pause > 0 {
            return Ok((self, Hook::None));
        }
        let enable = self.enable.checked_sub(1).ok_or(LazyMmuMisuse::DisableWithoutEnable)?;
        Ok((Counts { enable, ..self }, if enable == 0 { Hook::Leave } else { Hook::Flush }))
    }

    /// Turns the mode off at any depth until the matching resume.
    pub fn pause(self) -> Transition {
        let pause = self.pause.checked_add(1).ok_or(LazyMmuMisuse::PauseOverflow)?;
        let hook = if self.pause == 0 && self.enable > 0 { Hook::Pause } else { Hook::None };
        Ok((Counts { pause, ..self }, hook))
    }

    /// Undoes one pause; the last one turns the mode back on if a section is open.
    pub fn resume(self) -> Transition {
        let pause = self.pause.checked_sub(1).ok_or(LazyMmuMisuse::ResumeWithoutPause)?;
        let hook = if pause == 0 && self.enable > 0 { Hook::Resume } else { Hook::None };
        Ok((Counts { pause, ..self }, hook))
    }
}
