"""Reference algorithms, one module per image: summary, crosstab, logistic (and survival)."""
