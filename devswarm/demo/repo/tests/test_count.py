import unittest

from textkit import word_count


class WordCountTest(unittest.TestCase):
    def test_counts_lowercase_words(self):
        self.assertEqual(word_count("The cat and the hat"), {"the": 2, "cat": 1, "and": 1, "hat": 1})

    def test_empty(self):
        self.assertEqual(word_count(""), {})
