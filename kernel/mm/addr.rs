//! Physical and virtual addresses as distinct types, so that one can never
//! be passed where the other is meant.

use core::fmt;

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Entries in a contiguous run of pages (Linux's `CONT_PTES`, 4 KiB granule):
/// 16 level-3 entries with the contiguous bit that a TLB may cache as one.
pub const CONT_PTES: usize = 16;
/// Bytes a contiguous run of pages maps (Linux's `CONT_PTE_SIZE`): 64 KiB.
pub const CONT_PTE_SIZE: u64 = CONT_PTES as u64 * PAGE_SIZE;
pub const BLOCK_2M: u64 = 2 << 20;
pub const BLOCK_1G: u64 = 1 << 30;

macro_rules! address_type {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A ", $what, " address.")]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            #[inline]
            pub const fn new(addr: u64) -> Self {
                Self(addr)
            }
            #[inline]
            pub const fn as_u64(self) -> u64 {
                self.0
            }
            #[inline]
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
            #[inline]
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }
            /// `self + bytes`, or None if it would wrap.
            #[inline]
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(a) => Some(Self(a)),
                    None => None,
                }
            }
            /// `self + bytes`; the caller knows it cannot wrap.
            #[inline]
            pub const fn add(self, bytes: u64) -> Self {
                Self(self.0 + bytes)
            }
            /// Bytes from `base` up to `self`.
            #[inline]
            pub const fn offset_from(self, base: Self) -> u64 {
                self.0 - base.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address_type!(PhysAddr, "physical");
address_type!(VirtAddr, "virtual");

impl VirtAddr {
    #[inline]
    pub fn as_ptr<T>(self) -> *const T {
        self.0 as *const T
    }
    #[inline]
    pub fn as_mut_ptr<T>(self) -> *mut T {
        self.0 as *mut T
    }
    #[inline]
    pub fn from_ptr<T>(ptr: *const T) -> VirtAddr {
        VirtAddr(ptr as u64)
    }
    /// The kernel half: addresses translated through TTBR1 (bits 63:48 set).
    #[inline]
    pub const fn is_kernel(self) -> bool {
        self.0 >> 48 == 0xffff
    }
}
