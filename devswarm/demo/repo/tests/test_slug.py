import unittest

from textkit import slugify


class SlugifyTest(unittest.TestCase):
    def test_words_joined_by_hyphens(self):
        self.assertEqual(slugify("Hello World"), "hello-world")

    def test_punctuation_dropped(self):
        self.assertEqual(slugify("  Swarms, of agents!  "), "swarms-of-agents")

    def test_empty(self):
        self.assertEqual(slugify("!!!"), "")
