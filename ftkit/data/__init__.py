"""Data preparation: splits of one file and k-fold folds (splits), balancing and augmentation of the training split."""
