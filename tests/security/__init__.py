"""Security properties of the data owner's side: private files, clean refusals of bad input."""
