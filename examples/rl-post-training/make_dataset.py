"""Regenerate data/arithmetic.jsonl, the small prompt set the data-server ships (fixed seed).

Each line: {"id": N, "prompt": "Subtract 4 from 17.", "answer": 13}. The same operation is asked
in several phrasings, and some name the numbers in reverse order ("Subtract 4 from 17"), so a
policy has to read the words, not just the numbers.

    python3 make_dataset.py > data/arithmetic.jsonl
"""

import json
import random

TEMPLATES = {
    "+": ["What is {x} plus {y}?", "{x} + {y} = ?", "Compute the sum of {x} and {y}.",
          "Add {x} and {y}."],
    "-": ["What is {x} minus {y}?", "{x} - {y} = ?", "What is the difference of {x} and {y}?",
          "Subtract {y} from {x}."],
    "*": ["What is {x} times {y}?", "{x} * {y} = ?", "Compute the product of {x} and {y}.",
          "Multiply {x} by {y}."],
}
PER_TEMPLATE = 25


def main() -> None:
    rng = random.Random(7)
    rows = []
    for op, templates in TEMPLATES.items():
        for template in templates:
            for _ in range(PER_TEMPLATE):
                x, y = rng.randint(2, 19), rng.randint(2, 19)
                if op == "-" and x <= y:
                    x, y = y + 1, x  # keep differences positive and x != y
                answer = {"+": x + y, "-": x - y, "*": x * y}[op]
                rows.append({"prompt": template.format(x=x, y=y), "answer": answer})
    rng.shuffle(rows)
    for i, row in enumerate(rows):
        print(json.dumps({"id": i, **row}))


if __name__ == "__main__":
    main()
