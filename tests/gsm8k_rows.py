"""GSM8K-shaped word problems written for the DU003 tests (not copied from GSM8K).

Each problem has a worked solution in GSM8K's style: steps with `<<a*b=c>>`
calculator annotations, then `#### N`. `planted_conflicts` gives, per problem,
the row and a copy whose final answer was changed, the way a bad merge or a
second annotator produces them; `equivalent_answers` the same problems
answered again in other words with the same result.
"""

from __future__ import annotations

#: (question, solution steps, final answer, a wrong final answer that also appears in the steps or not)
PROBLEMS = [
    ("Mia picked 18 plums. She gave 6 to her aunt, 4 to her cousin and 2 to a neighbour. How many plums does she have left?",
     "Mia gave away 6 + 4 + 2 = <<6+4+2=12>>12 plums.\nShe has 18 - 12 = <<18-12=6>>6 plums left.", "6", "12"),
    ("A baker makes 24 muffins a day and sells them for $3 each. How much money does he make in 5 days?",
     "He makes 24 * 3 = $<<24*3=72>>72 a day.\nIn 5 days he makes 72 * 5 = $<<72*5=360>>360.", "360", "72"),
    ("Tom reads 15 pages a night. His book has 240 pages. How many nights does he need to finish it?",
     "He needs 240 / 15 = <<240/15=16>>16 nights.", "16", "15"),
    ("A class has 32 students. A quarter of them walk to school and the rest take the bus. How many take the bus?",
     "A quarter is 32 / 4 = <<32/4=8>>8 students.\nSo 32 - 8 = <<32-8=24>>24 take the bus.", "24", "8"),
    ("Lena buys 3 notebooks at $4 each and a pen for $2. She pays with a $20 bill. How much change does she get?",
     "The notebooks cost 3 * 4 = $<<3*4=12>>12.\nWith the pen she spends 12 + 2 = $<<12+2=14>>14.\nHer change is 20 - 14 = $<<20-14=6>>6.", "6", "14"),
    ("A farmer has 7 rows of apple trees with 12 trees in each row. A storm knocks down 9 trees. How many trees are left?",
     "He had 7 * 12 = <<7*12=84>>84 trees.\nAfter the storm he has 84 - 9 = <<84-9=75>>75 trees.", "75", "84"),
    ("Sam runs 3 miles on weekdays and 5 miles on each weekend day. How many miles does he run in a week?",
     "On weekdays he runs 5 * 3 = <<5*3=15>>15 miles.\nOn the weekend he runs 2 * 5 = <<2*5=10>>10 miles.\nIn total he runs 15 + 10 = <<15+10=25>>25 miles.", "25", "30"),
    ("A pizza is cut into 8 slices. Four friends order 3 pizzas and share them equally. How many slices does each friend get?",
     "There are 3 * 8 = <<3*8=24>>24 slices.\nEach friend gets 24 / 4 = <<24/4=6>>6 slices.", "6", "8"),
    ("Nora saves $15 a week. How many weeks does it take her to save for a bike that costs $180?",
     "She needs 180 / 15 = <<180/15=12>>12 weeks.", "12", "11"),
    ("A parking lot has 5 levels with 40 spaces each. 126 cars are parked. How many spaces are free?",
     "There are 5 * 40 = <<5*40=200>>200 spaces.\nSo 200 - 126 = <<200-126=74>>74 are free.", "74", "200"),
    ("Jake has twice as many marbles as Ben. Ben has 14 marbles. How many marbles do they have together?",
     "Jake has 2 * 14 = <<2*14=28>>28 marbles.\nTogether they have 28 + 14 = <<28+14=42>>42 marbles.", "42", "28"),
    ("A shirt costs $40 and is on sale for 25% off. What is the sale price?",
     "The discount is 40 * 0.25 = $<<40*0.25=10>>10.\nThe sale price is 40 - 10 = $<<40-10=30>>30.", "30", "10"),
    ("Ella bakes 4 trays of cookies with 15 cookies on each tray. Her family eats 13. How many cookies remain?",
     "She bakes 4 * 15 = <<4*15=60>>60 cookies.\nAfter her family eats some, 60 - 13 = <<60-13=47>>47 remain.", "47", "45"),
    ("A train travels at 60 miles per hour for 3 hours and then at 40 miles per hour for 2 hours. How far does it travel?",
     "First it covers 60 * 3 = <<60*3=180>>180 miles.\nThen it covers 40 * 2 = <<40*2=80>>80 miles.\nIn all it travels 180 + 80 = <<180+80=260>>260 miles.", "260", "180"),
    ("Olivia has 56 stickers and gives an equal number to each of her 7 friends, keeping none. How many does each friend get?",
     "Each friend gets 56 / 7 = <<56/7=8>>8 stickers.", "8", "7"),
    ("A garden is 12 feet long and 9 feet wide. Fencing costs $2 per foot. How much does it cost to fence the garden?",
     "The perimeter is 2 * (12 + 9) = <<2*(12+9)=42>>42 feet.\nThe fence costs 42 * 2 = $<<42*2=84>>84.", "84", "42"),
    ("Max earns $12 an hour and works 35 hours a week. He spends $150 a week on rent. How much does he keep each week?",
     "He earns 12 * 35 = $<<12*35=420>>420 a week.\nAfter rent he keeps 420 - 150 = $<<420-150=270>>270.", "270", "420"),
    ("A library has 1,200 books. 35% of them are fiction. How many books are not fiction?",
     "Fiction books number 1200 * 0.35 = <<1200*0.35=420>>420.\nSo 1200 - 420 = <<1200-420=780>>780 are not fiction.", "780", "1,200"),
    ("Grace buys 6 packs of juice with 4 boxes each. She drinks 2 boxes a day. How many days do the boxes last?",
     "She has 6 * 4 = <<6*4=24>>24 boxes.\nThey last 24 / 2 = <<24/2=12>>12 days.", "12", "24"),
    ("A store sold 45 bikes in March, 12 more in April than in March, and half of April's sales in May. How many bikes did it sell in May?",
     "In April it sold 45 + 12 = <<45+12=57>>57 bikes.\nIn May it sold 57 / 2 = <<57/2=28.5>>28.5, so the question's numbers give 28.5 bikes.", "28.5", "57"),
    ("Ava has 3 times as many books as Leo, who has 9. Ava donates 10 books. How many books does Ava have now?",
     "Ava had 3 * 9 = <<3*9=27>>27 books.\nAfter donating she has 27 - 10 = <<27-10=17>>17 books.", "17", "27"),
    ("A recipe uses 250 grams of flour per loaf. How many grams of flour are needed for 8 loaves?",
     "8 loaves need 250 * 8 = <<250*8=2000>>2,000 grams of flour.", "2000", "250"),
]


def gsm8k_row(question: str, answer: str) -> dict:
    """A GSM8K row as it is usually converted for chat fine-tuning."""
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def planted_conflicts() -> list[tuple[dict, dict]]:
    """Per problem, (the right row, a copy whose final answer was changed).

    Even problems change only the `####` line (to a number the steps also
    contain, where there is one: the hard case); odd ones change the last step's
    result and the `####` line together, as a copy with an arithmetic slip has it."""
    pairs = []
    for index, (question, steps, right, wrong) in enumerate(PROBLEMS):
        good = gsm8k_row(question, f"{steps}\n#### {right}")
        if index % 2 == 0:
            bad_steps = steps
        else:
            head, _, last = steps.rpartition("\n")
            bad_steps = (head + "\n" if head else "") + last.replace(f">>{right}", f">>{wrong}").replace(f"{right} ", f"{wrong} ")
        pairs.append((good, gsm8k_row(question, f"{bad_steps}\n#### {wrong}")))
    return pairs


def equivalent_answers() -> list[tuple[dict, dict]]:
    """Per problem, (the row, the same question answered in other words with the same result)."""
    pairs = []
    for index, (question, steps, right, _) in enumerate(PROBLEMS):
        good = gsm8k_row(question, f"{steps}\n#### {right}")
        last_line = steps.rpartition("\n")[2]
        rewordings = (
            f"Let's work it out step by step. {last_line.split('<<')[0].strip()} {right}. The answer is {right}.",
            f"Working through the numbers in the question gives {right}, so the answer is {right}.",
            f"{steps.replace('<<', '').replace('>>', ' ')}\nSo the final answer is {right}.",
        )
        pairs.append((good, gsm8k_row(question, rewordings[index % len(rewordings)])))
    return pairs
