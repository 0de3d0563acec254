//! Paging and sorting of list queries.

use serde::Serialize;

pub const MAX_PER_PAGE: u32 = 100;

/// A validated page request: `page` ≥ 1, `per_page` in 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub per_page: u32,
}

impl PageRequest {
    pub fn new(page: Option<u32>, per_page: Option<u32>) -> Result<Self, String> {
        let page = page.unwrap_or(1);
        let per_page = per_page.unwrap_or(20);
        if page == 0 {
            return Err("page starts at 1".into());
        }
        if per_page == 0 || per_page > MAX_PER_PAGE {
            return Err(format!("per_page must be 1 to {MAX_PER_PAGE}"));
        }
        Ok(Self { page, per_page })
    }

    pub fn limit(&self) -> i64 {
        i64::from(self.per_page)
    }

    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.per_page)
    }
}

/// `?sort=field` (ascending) or `?sort=-field` (descending), with `field` from an allow-list
/// mapped to SQL, so no client text ever reaches the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub column: &'static str,
    pub descending: bool,
}

impl Sort {
    pub fn parse(
        raw: Option<&str>,
        allowed: &[(&str, &'static str)],
        default: Sort,
    ) -> Result<Self, String> {
        let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(default);
        };
        let (descending, field) = match raw.strip_prefix('-') {
            Some(field) => (true, field),
            None => (false, raw),
        };
        allowed
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, column)| Sort { column, descending })
            .ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
                format!("cannot sort by {field:?}; use one of {}", names.join(", "))
            })
    }

    /// The ORDER BY clause, with a unique tie-breaker so pages are stable.
    pub fn order_by(&self, tie_breaker: &str) -> String {
        let direction = if self.descending { "DESC" } else { "ASC" };
        format!(
            "ORDER BY {} {direction} NULLS LAST, {tie_breaker} ASC",
            self.column
        )
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub per_page: u32,
    pub total: i64,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, request: PageRequest, total: i64) -> Self {
        Self {
            items,
            page: request.page,
            per_page: request.per_page,
            total,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        let Page {
            items,
            page,
            per_page,
            total,
        } = self;
        Page {
            items: items.into_iter().map(f).collect(),
            page,
            per_page,
            total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWED: &[(&str, &str)] = &[("name", "l.name"), ("created_at", "l.created_at")];
    const DEFAULT: Sort = Sort {
        column: "l.created_at",
        descending: true,
    };

    #[test]
    fn a_leading_minus_sorts_descending() {
        assert_eq!(
            Sort::parse(Some("-name"), ALLOWED, DEFAULT).unwrap(),
            Sort {
                column: "l.name",
                descending: true
            }
        );
        assert_eq!(
            Sort::parse(Some("name"), ALLOWED, DEFAULT).unwrap(),
            Sort {
                column: "l.name",
                descending: false
            }
        );
        assert_eq!(Sort::parse(None, ALLOWED, DEFAULT).unwrap(), DEFAULT);
    }

    #[test]
    fn unknown_sort_fields_are_refused() {
        assert!(Sort::parse(Some("password_hash"), ALLOWED, DEFAULT).is_err());
    }

    #[test]
    fn per_page_is_capped_at_one_hundred() {
        assert!(PageRequest::new(Some(1), Some(101)).is_err());
        assert!(PageRequest::new(Some(0), None).is_err());
        assert_eq!(PageRequest::new(Some(3), Some(10)).unwrap().offset(), 20);
    }
}
