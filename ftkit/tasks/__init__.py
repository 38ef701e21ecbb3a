"""What recipes and serve share: data readers, the classification / NER / instruct tasks, scoring,
generation, metrics."""
