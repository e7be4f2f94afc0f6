import unittest

from textkit.stats import mean_word_length


class StatsTest(unittest.TestCase):
    def test_mean(self):
        self.assertAlmostEqual(mean_word_length("a bb ccc"), 2.0)

    def test_no_words(self):
        self.assertEqual(mean_word_length("  "), 0.0)
