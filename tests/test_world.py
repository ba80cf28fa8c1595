"""The synthetic world: truth relation on hand-made scenes, vectorised truth matrix, captions, noise."""
import random

import numpy as np
import pytest

from otterlib.data import world
from otterlib.data.world import CaptionSpec, Mention, Relation, SceneObject

LEFT_RED_CIRCLE = SceneObject("circle", "red", "solid", "large", 0.3, 0.3)
RIGHT_RED_CIRCLE = SceneObject("circle", "red", "striped", "small", 0.7, 0.3)
LOW_BLUE_SQUARE = SceneObject("square", "blue", "hollow", "large", 0.3, 0.7)
LOW_RIGHT_BLUE_SQUARE = SceneObject("square", "blue", "hollow", "large", 0.7, 0.7)
SCENES = {
    "one red circle": (LEFT_RED_CIRCLE,),
    "red circle + blue square": (LEFT_RED_CIRCLE, LOW_BLUE_SQUARE),
    "two red circles + blue square": (LEFT_RED_CIRCLE, RIGHT_RED_CIRCLE, LOW_BLUE_SQUARE),
    "two red circles + blue square on the right": (RIGHT_RED_CIRCLE, LOW_RIGHT_BLUE_SQUARE, LEFT_RED_CIRCLE),
}
SPECS = {
    "circle": CaptionSpec((Mention("circle"),)),
    "red circle": CaptionSpec((Mention("circle", color="red"),)),
    "blue circle": CaptionSpec((Mention("circle", color="blue"),)),
    "small circle": CaptionSpec((Mention("circle", size="small"),)),
    "two red circles": CaptionSpec((Mention("circle", "red"), Mention("circle", "red"))),
    "red circle and circle": CaptionSpec((Mention("circle", "red"), Mention("circle"))),
    "circle above square": CaptionSpec((Mention("circle"), Mention("square")), Relation(0, "above", 1)),
    "circle below square": CaptionSpec((Mention("circle"), Mention("square")), Relation(0, "below", 1)),
    "square right of circle": CaptionSpec((Mention("square"), Mention("circle")), Relation(0, "right of", 1)),
    "small circle above square": CaptionSpec((Mention("circle", size="small"), Mention("square")),
                                             Relation(0, "above", 1)),
    "circle left of square": CaptionSpec((Mention("circle"), Mention("square")), Relation(0, "left of", 1)),
    "small circle left of square": CaptionSpec((Mention("square"), Mention("circle", size="small")),
                                               Relation(1, "left of", 0)),
    "three objects": CaptionSpec((Mention("square", "blue", "hollow", "large"), Mention("circle", pattern="striped"),
                                  Mention("circle", pattern="solid")), Relation(1, "right of", 2)),
}
EXPECTED = {  # (scene, spec) pairs that are true; every other pair is false
    ("one red circle", "circle"), ("one red circle", "red circle"),
    ("red circle + blue square", "circle"), ("red circle + blue square", "red circle"),
    ("red circle + blue square", "circle above square"),
    ("two red circles + blue square", "circle"), ("two red circles + blue square", "red circle"),
    ("two red circles + blue square", "small circle"), ("two red circles + blue square", "two red circles"),
    ("two red circles + blue square", "red circle and circle"),
    ("two red circles + blue square", "circle above square"),
    ("two red circles + blue square", "small circle above square"),
    ("two red circles + blue square", "three objects"),
    *(("two red circles + blue square on the right", spec) for spec in (
        "circle", "red circle", "small circle", "two red circles", "red circle and circle", "circle above square",
        "square right of circle", "small circle above square", "three objects", "circle left of square")),
}


@pytest.mark.parametrize("scene_name", SCENES)
@pytest.mark.parametrize("spec_name", SPECS)
def test_consistent_on_hand_made_scenes(scene_name, spec_name):
    assert world.consistent(SCENES[scene_name], SPECS[spec_name]) == ((scene_name, spec_name) in EXPECTED)


def test_the_hand_made_cases_cover_each_way_to_fail():
    """Colour mismatch, too few objects of a kind, a violated relation, a relation that holds only for an
    object the mention cannot use: each is a false pair above."""
    false = {(s, c) for s in SCENES for c in SPECS} - EXPECTED
    assert ("one red circle", "blue circle") in false                       # colour mismatch
    assert ("one red circle", "small circle") in false                      # size mismatch
    assert ("one red circle", "two red circles") in false                   # too few objects of a kind
    assert ("one red circle", "red circle and circle") in false             # mentions need distinct objects
    assert ("red circle + blue square", "circle below square") in false     # relation violated
    assert ("red circle + blue square", "square right of circle") in false  # same column: not right of
    # only the large circle is left of the square on the right; the small one is above it
    assert ("two red circles + blue square on the right", "small circle left of square") in false


def test_truth_matrix_on_hand_made_scenes():
    scenes, specs = list(SCENES.values()), list(SPECS.values())
    expected = np.array([[(s, c) in EXPECTED for c in SPECS] for s in SCENES])
    got = world.truth_matrix(scenes, specs)
    assert got.dtype == bool and got.shape == (len(scenes), len(specs))
    np.testing.assert_array_equal(got, expected)


def test_truth_matrix_equals_the_brute_force_relation_on_generated_pairs():
    pairs = world.generate_pairs(150, 0.5, seed=4)
    scenes = [p.scene for p in pairs]
    specs = [p.caption_spec for p in pairs] + [world.partial_spec(s, random.Random(i)) for i, s in enumerate(scenes)]
    got = world.truth_matrix(scenes, specs)
    brute = np.array([[world.consistent(s, c) for c in specs] for s in scenes])
    np.testing.assert_array_equal(got, brute)
    assert 0 < got.mean() < 0.5  # neither trivially empty nor full


def test_relation_margin_is_strict():
    a = SceneObject("circle", "red", "solid", "large", 0.5, 0.5)
    b = SceneObject("square", "red", "solid", "large", 0.5 + world.RELATION_MARGIN, 0.5)
    c = SceneObject("square", "red", "solid", "large", 0.5 + world.RELATION_MARGIN + 0.01, 0.5)
    assert not world.relation_holds(a, "left of", b) and world.relation_holds(a, "left of", c)
    assert world.relation_holds(c, "right of", a) and not world.relation_holds(a, "above", c)


def test_caption_spec_rejects_bad_relations_and_counts():
    with pytest.raises(ValueError):
        CaptionSpec((Mention("circle"),), Relation(0, "left of", 1))
    with pytest.raises(ValueError):
        CaptionSpec((Mention("circle"), Mention("square")), Relation(0, "behind", 1))
    with pytest.raises(ValueError):
        CaptionSpec(())


def test_render_caption_names_every_mentioned_attribute():
    spec = CaptionSpec((Mention("square", "yellow", "striped", "large"), Mention("star", "orange", size="small")),
                       Relation(1, "left of", 0))
    assert world.render_caption(spec, random.Random(0)) == "a small orange star left of a large striped yellow square"
    one = CaptionSpec((Mention("arrow", "orange"),))
    assert world.render_caption(one, random.Random(0)) in ("an orange arrow", "a photo of an orange arrow",
                                                           "an orange arrow on a plain background")


def test_synonyms_appear_in_captions_at_the_synonym_rate():
    spec = CaptionSpec((Mention("diamond", "red"),))
    rng = random.Random(0)
    texts = [world.mention_phrase(spec.mentions[0], rng) for _ in range(2000)]
    assert set(texts) == {"red diamond", "scarlet diamond", "red rhombus", "scarlet rhombus"}
    assert abs(sum("scarlet" in t for t in texts) / len(texts) - world.SYNONYM_RATE) < 0.04


def test_pairs_are_deterministic_per_seed():
    a = world.generate_pairs(200, 0.3, seed=7)
    assert a == world.generate_pairs(200, 0.3, seed=7)
    assert [p.caption for p in a] != [p.caption for p in world.generate_pairs(200, 0.3, seed=8)]


@pytest.mark.parametrize("n,fraction,kinds", [(200, 0.3, ("wrong", "partial")), (101, 0.5, ("wrong", "partial")),
                                              (50, 0.0, ("wrong", "partial")), (40, 1.0, ("wrong", "partial")),
                                              (90, 0.4, ("wrong",)), (90, 0.4, ("partial",))])
def test_noise_count_is_exact_and_split_between_kinds(n, fraction, kinds):
    pairs = world.generate_pairs(n, fraction, seed=1, noise_kinds=kinds)
    noise = [p.noise for p in pairs]
    assert sum(k != "none" for k in noise) == round(fraction * n)
    counts = [noise.count(k) for k in kinds]
    assert max(counts) - min(counts) <= 1 and set(noise) <= {"none", *kinds}


def test_noise_kinds_are_what_they_say():
    pairs = world.generate_pairs(400, 0.5, seed=3)
    truth = world.truth_matrix([p.scene for p in pairs], [p.caption_spec for p in pairs])
    clean = {p.clean_caption for p in pairs}
    for i, p in enumerate(pairs):
        assert truth[i, i] == (p.noise != "wrong")
        if p.noise == "none":
            assert p.caption == p.clean_caption and len(p.caption_spec.mentions) == len(p.scene)
            assert all(None not in m.attributes().values() for m in p.caption_spec.mentions)
        elif p.noise == "wrong":
            assert p.caption in clean and p.caption != p.clean_caption
        else:  # partial: fewer objects, or fewer attributes
            mentions = p.caption_spec.mentions
            assert len(mentions) < len(p.scene) or any(None in m.attributes().values() for m in mentions)


def test_generate_pairs_validates_its_arguments():
    with pytest.raises(ValueError):
        world.generate_pairs(10, 1.5, seed=0)
    with pytest.raises(ValueError):
        world.generate_pairs(1, 0.0, seed=0)
    with pytest.raises(ValueError):
        world.generate_pairs(10, 0.5, seed=0, noise_kinds=("shuffled",))


def test_attribute_draws_follow_the_zipf_weights():
    rng = random.Random(0)
    shapes = [world.random_object(rng, 0.5, 0.5, 1.0).shape for _ in range(20000)]
    weights = np.array(world.zipf_weights(len(world.SHAPES), 1.0))
    expected = weights / weights.sum()
    observed = np.array([shapes.count(s) for s in world.SHAPES]) / len(shapes)
    assert np.abs(observed - expected).max() < 0.01


def test_multi_object_scenes_use_distinct_cells():
    rng = random.Random(2)
    for _ in range(200):
        scene = world.random_scene(rng, 0.8)
        assert 1 <= len(scene) <= world.MAX_OBJECTS
        for a in scene:
            for b in scene:
                if a is not b:  # distinct cells differ by more than the relation margin on some axis
                    assert max(abs(a.x - b.x), abs(a.y - b.y)) > world.RELATION_MARGIN
