library(testthat)
library(vantage)

test_check("vantage")
