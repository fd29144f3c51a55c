"""A process that imported gpt-2-simple first (graph mode): recover, or say what to do.

Each case runs in a child process, since ``import gpt_2_simple`` turns eager
execution off for the whole process.
"""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import save

import gpt2_simple_plus as gpt2
import helpers
from gpt2_simple_plus.loading import load_model
from gpt2_simple_plus.eager import SWITCHED
from gpt2_simple_plus.hparams import hparams_for
from helpers import FileServer, config_for, hf_tensors, repo_files

pytestmark = pytest.mark.slow

SWITCHED_START = SWITCHED.split("(")[0]
GENERATE = '''
sess = gpt2.start_tf_sess()
gpt2.load_gpt2(sess, model_name="tiny", model_dir=MODELS)
texts = gpt2.generate(sess, prefix="the", length=8, temperature=0.0, return_as_list=True)
print("RESULT " + json.dumps({"texts": texts, "eager": tf.executing_eagerly()}))
'''


def child(code, cwd, **names):
    """Run ``code`` after ``import json, tensorflow as tf``; ``names`` become variables."""
    prelude = "import json\nimport tensorflow as tf\n" + "".join(
        f"{k} = {v!r}\n" for k, v in names.items())
    proc = helpers.run_python(prelude + code, cwd=str(cwd), timeout=300,
                              env={"NO_PROXY": "127.0.0.1,localhost", "PYTHONPATH": helpers.REPO})
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    return proc, result


def expected_texts(model_dir):
    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, model_name="tiny", model_dir=os.path.dirname(model_dir))
    return gpt2.generate(sess, prefix="the", length=8, temperature=0.0, return_as_list=True)


def test_import_gpt_2_simple_first_then_load_and_generate(tiny_model_dir, tmp_path):
    code = "import gpt_2_simple\nassert not tf.executing_eagerly()\n" \
           "import gpt2_simple_plus as gpt2\n" + GENERATE
    proc, result = child(code, tmp_path, MODELS=os.path.dirname(tiny_model_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result == {"texts": expected_texts(tiny_model_dir), "eager": True}
    switched = [line for line in proc.stdout.splitlines() if line.startswith(SWITCHED_START)]
    assert switched == [SWITCHED.format(cause="`import gpt_2_simple` turns it off")]


def test_import_gpt_2_simple_after_loading_a_model(tiny_model_dir, tmp_path):
    """The model was built eagerly; gpt-2-simple's session holds an empty graph."""
    code = ("import gpt2_simple_plus as gpt2\n"
            "sess = gpt2.start_tf_sess()\n"
            "gpt2.load_gpt2(sess, model_name='tiny', model_dir=MODELS)\n"
            "import gpt_2_simple\n"
            "graph_sess = gpt_2_simple.start_tf_sess()\n"
            "assert not tf.executing_eagerly()\n"
            "texts = gpt2.generate(sess, prefix='the', length=8, temperature=0.0, "
            "return_as_list=True)\n"
            "probs = gpt2.next_token_probabilities(sess, 'the', top_k=3)\n"
            "print('RESULT ' + json.dumps({'texts': texts, 'eager': tf.executing_eagerly()}))\n")
    proc, result = child(code, tmp_path, MODELS=os.path.dirname(tiny_model_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result == {"texts": expected_texts(tiny_model_dir), "eager": True}
    assert proc.stdout.count(SWITCHED_START) == 1


def test_a_graph_already_built_is_refused_with_the_fix(tiny_model_dir, hf_repo, tmp_path):
    code = ("import gpt_2_simple\n"
            "graph_sess = gpt_2_simple.start_tf_sess()\n"
            "seed = tf.constant(1)   # an operation in the graph, as gpt-2-simple's calls make\n"
            "import gpt2_simple_plus as gpt2\n"
            "said = []\n"
            "for call in (lambda: gpt2.start_tf_sess(),\n"
            "             lambda: gpt2.finetune(None, 'x.txt', model_name='tiny', "
            "model_dir=MODELS),\n"
            "             lambda: gpt2.export_model(None, 'out', model_name='tiny', "
            "model_dir=MODELS),\n"
            "             lambda: gpt2.download_gpt2(model_dir='models', "
            "model_name='hf:tester/tiny-gpt2', hf_endpoint=URL, progress=False, backoff=0)):\n"
            "    try:\n"
            "        call()\n"
            "    except gpt2.GraphModeError as err:\n"
            "        said.append(str(err))\n"
            "print('RESULT ' + json.dumps(said))\n")
    with FileServer(hf_repo[1]) as server:
        proc, said = child(code, tmp_path, MODELS=os.path.dirname(tiny_model_dir),
                           URL=server.url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(said) == 4 and len(set(said)) == 1
    assert "import gpt_2_simple" in said[0] and "restart the runtime" in said[0]
    assert "eager execution is off" in said[0]
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "checkpoint")
    assert SWITCHED_START not in proc.stdout
    # the Hugging Face download stopped before writing a checkpoint, and resumes later
    folder = tmp_path / "models" / "hf-tester--tiny-gpt2"
    assert not (folder / "model.ckpt.index").exists()
    assert not gpt2.is_gpt2_downloaded(str(tmp_path / "models"), "hf:tester/tiny-gpt2")


@pytest.fixture(scope="module")
def hf_repo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocab")
    n_vocab = helpers.make_tiny_vocab(str(folder))
    hp = hparams_for("tiny", n_vocab=n_vocab)
    tensors = hf_tensors(hp)
    files = {"config.json": config_for(hp), "model.safetensors": save(tensors),
             "vocab.json": (folder / "encoder.json").read_bytes(),
             "merges.txt": (folder / "vocab.bpe").read_bytes()}
    return tensors, repo_files("tester/tiny-gpt2", files)


HF_DOWNLOAD = '''
import gpt_2_simple
{build}
import gpt2_simple_plus as gpt2
try:
    gpt2.download_gpt2(model_dir="models", model_name="hf:tester/tiny-gpt2", hf_endpoint=URL,
                       progress=False, backoff=0)
    print("RESULT " + json.dumps("converted"))
except gpt2.GraphModeError as err:
    print("RESULT " + json.dumps(str(err)))
'''


def test_hugging_face_conversion_under_graph_mode(hf_repo, tmp_path):
    tensors, files = hf_repo
    folder = tmp_path / "models" / "hf-tester--tiny-gpt2"
    with FileServer(files) as server:
        proc, result = child(HF_DOWNLOAD.format(build=""), tmp_path, URL=server.url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result == "converted" and proc.stdout.count(SWITCHED_START) == 1
    assert gpt2.is_gpt2_downloaded(str(tmp_path / "models"), "hf:tester/tiny-gpt2")
    weights = load_model(str(folder)).numpy_weights()
    np.testing.assert_array_equal(weights["model/wte"], tensors["transformer.wte.weight"])


def test_doctests():
    import doctest

    from gpt2_simple_plus import eager

    result = doctest.testmod(eager)
    assert result.attempted >= 1 and result.failed == 0
